"""Delivery on two whole stacks: Postgres + Redis + SeaweedFS (S3), and the embedded one
(SQLite + in-process Redis + a local folder), with committed data so concurrent requests and a
second app instance see each other's work."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image as PILImage

from backend.composition import AppResources
from backend.config import Settings
from backend.core.migrations import upgrade
from backend.delivery import service
from backend.main import create_app
from tests.conftest import PASSWORD, TEST_SECRET, client_for, unique_email
from tests.servers import S3Server

BASE = "https://testserver"


def jpeg(width: int = 640, height: int = 480) -> bytes:
    """A picture with structure (a gradient and bars), so encoders have real work."""
    image = PILImage.linear_gradient("L").resize((width, height)).convert("RGB")
    for i in range(0, width, width // 8):
        image.paste((30 + i % 200, 120, 200 - i % 180), (i, height // 5, i + width // 16, height))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def decoded(answer: httpx.Response) -> PILImage.Image:
    assert answer.status_code == 200, answer.text
    image = PILImage.open(io.BytesIO(answer.content))
    image.load()
    return image


@dataclass
class Stack:
    kind: str
    app: FastAPI
    resources: AppResources
    settings: Settings
    opened: list[httpx.AsyncClient] = field(default_factory=list)

    def second_instance(self, **overrides: Any) -> FastAPI:
        """Another API instance on the same database, Redis and storage (and other settings)."""
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        resources = AppResources(
            settings,
            db=self.resources.db,
            redis=self.resources.redis,
            storage=self.resources.storage,
        )
        return create_app(settings, resources=resources)

    def anonymous(self, app: FastAPI | None = None) -> httpx.AsyncClient:
        c = client_for(app or self.app)
        self.opened.append(c)
        return c

    async def user(self) -> httpx.AsyncClient:
        c = self.anonymous()
        answer = await c.post(
            "/api/auth/register", json={"email": unique_email(), "password": PASSWORD}
        )
        assert answer.status_code == 201, answer.text
        c.headers["X-CSRF-Token"] = c.cookies.get("csrf_token") or ""
        return c

    async def upload(self, c: httpx.AsyncClient, data: bytes | None = None) -> str:
        answer = await c.post(
            "/api/images", files={"file": ("photo.jpg", data or jpeg(), "image/jpeg")}
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def mint(self, c: httpx.AsyncClient, **body: Any) -> str:
        answer = await c.post("/api/delivery/url", json=body)
        assert answer.status_code == 201, answer.text
        url: str = answer.json()["url"]
        assert url.startswith(BASE + "/d/")
        return url.removeprefix(BASE)


@pytest.fixture(params=["s3", "embedded"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The servers a stack needs, started from a plain (loop-free) fixture: Postgres' fixture
    runs migrations with ``asyncio.run``."""
    if request.param == "embedded":
        return {"kind": "embedded"}
    return {
        "kind": "s3",
        "s3": request.getfixturevalue("s3_server"),
        "db": request.getfixturevalue("committed_database"),
        "redis": request.getfixturevalue("redis"),
        "settings": request.getfixturevalue("settings"),
    }


@pytest.fixture
async def stack(backend: dict[str, Any], tmp_path: Path) -> AsyncIterator[Stack]:
    common: dict[str, Any] = {"public_base_url": BASE, "max_image_pixels": 30_000_000}
    if backend["kind"] == "s3":
        s3: S3Server = backend["s3"]
        settings: Settings = backend["settings"]
        app_settings = settings.model_copy(
            update={
                **common,
                "storage_url": f"s3://{s3.bucket}?endpoint_url={s3.endpoint_url}"
                f"&region={s3.region}&access_key={s3.access_key}&secret_key={s3.secret_key}",
            }
        )
        resources = AppResources(app_settings, db=backend["db"], redis=backend["redis"])
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'atelier.db'}"
        await asyncio.to_thread(upgrade, url)
        app_settings = Settings(
            env="test",
            secret_key=TEST_SECRET,
            database_url=url,
            redis_url=None,
            storage_url=f"file://{tmp_path / 'storage'}",
            **common,
        )
        resources = AppResources(app_settings)
    made = Stack(
        backend["kind"], create_app(app_settings, resources=resources), resources, app_settings
    )
    try:
        yield made
    finally:
        for c in made.opened:
            await c.aclose()
        await resources.storage.close()
        if backend["kind"] == "embedded":
            await resources.close()


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of delivery's decoder (every render decodes exactly once)."""
    calls: list[int] = []
    real: Callable[..., Any] = service._decode

    def counting(data: bytes, **kwargs: Any) -> Any:
        calls.append(len(data))
        return real(data, **kwargs)

    monkeypatch.setattr(service, "_decode", counting)
    return calls
