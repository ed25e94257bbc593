"""Route order: the app matches its hot routers first (``create_app``), which is safe only while
no path is served by routes of two routers: then every request resolves to the same route in any
router order. Checked on a concrete path for every route, with awkward parameter values (a
segment that is another route's literal), and on the live app's resolution."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import compile_path
from starlette.testclient import TestClient

from backend.config import Settings
from backend.main import DOC_ORDER, create_app


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    folder = tmp_path_factory.mktemp("routing")
    return create_app(
        Settings(
            env="test",
            secret_key="routing-test-" + "x" * 40,
            database_url=f"sqlite+aiosqlite:///{folder / 'db.sqlite'}",
            storage_url=f"file://{folder / 'storage'}",
        )
    )


PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")
# Parameter values to try: plain, a UUID, and literals other routes use as segments.
VALUES = ["x", "00000000-0000-0000-0000-000000000000", "me", "download", "summary", "items"]


def samples(path: str) -> list[str]:
    return [
        PARAM.sub(lambda m, v=value: "a/b" if m.group(2) == "path" else v, path)  # type: ignore[misc]
        for value in VALUES
    ]


def owner_of(route: object) -> str:
    for index, router in enumerate(DOC_ORDER):
        if route in router.routes:
            return f"router {index}"
    return "app"


def test_no_path_is_served_by_two_routers(app: FastAPI) -> None:
    contexts = [
        (context, compile_path(context.path or "")[0])
        for context in iter_route_contexts(app.routes)
        if context.path
    ]
    assert len(contexts) > 40
    checked = 0
    for context, _ in contexts:
        for path in samples(context.path or ""):
            owners = {
                owner_of(other.original_route) for other, regex in contexts if regex.match(path)
            }
            checked += 1
            assert len(owners) == 1, f"{path} is matched by routes of {owners}"
    assert checked > 200


def test_hot_routes_are_tried_first_and_every_path_resolves_as_documented(
    app: FastAPI,
) -> None:
    # The first included router is the images one; /api/auth/me's router comes next.
    first = [context.path for context in iter_route_contexts(app.routes)][1:30]
    assert "/api/images" in first[:6]
    assert "/api/auth/me" in first
    # Unauthenticated requests to routes of several routers still reach their own route (a 401
    # from its dependency, a 405 from the same path with another method), never another's.
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/api/images").status_code == 401
        assert client.get("/api/auth/me").status_code == 401
        assert client.put("/api/images").status_code == 405
        assert client.put("/api/auth/me").status_code == 405
        assert client.get("/api/nowhere").status_code == 404
        assert client.get(f"/api/tasks/{VALUES[1]}").status_code == 401
