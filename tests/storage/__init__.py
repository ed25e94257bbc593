"""Storage tests; the helpers here build an app serving a given storage backend."""

from __future__ import annotations

from fastapi import FastAPI

from backend.composition import AppResources
from backend.config import Settings
from backend.main import create_app
from backend.storage.base import Storage
from backend.storage.router import router as storage_router

SECRET = "storage-test-secret-" + "s" * 32
PUBLIC_BASE_URL = "https://testserver"


def app_serving(storage: Storage) -> FastAPI:
    """The real app (middleware, problem+json handlers) with ``storage`` injected.

    Storage needs neither the database nor Redis, so none is started for these tests.
    """
    settings = Settings(env="test", secret_key=SECRET, storage_url="file:///unused")
    app = create_app(settings, resources=AppResources(settings, storage=storage))
    # Until main.py includes the storage router itself.
    if not any(getattr(route, "path", None) == "/api/storage/upload" for route in app.routes):
        app.include_router(storage_router)
    return app
