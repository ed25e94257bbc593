"""problem+json for every kind of failure, and the request id on every answer."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.auth.test_router import assert_problem
from tests.conftest import AppFactory, client_for


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/nothing-here"), 404, "http.not_found")
    assert_problem(await client.delete("/api/auth/me"), 405, "http.method_not_allowed")


async def test_request_id_is_generated_or_echoed(client: httpx.AsyncClient) -> None:
    generated = await client.get("/healthz")
    assert len(generated.headers["X-Request-ID"]) == 32
    echoed = await client.get("/healthz", headers={"X-Request-ID": "trace-abc.123"})
    assert echoed.headers["X-Request-ID"] == "trace-abc.123"
    # Header injection or absurd lengths are replaced, not echoed.
    for hostile in (b"a" * 500, b"bad id with spaces", "x\u00e9".encode()):
        answer = await client.get("/healthz", headers=[(b"X-Request-ID", hostile)])
        assert answer.headers["X-Request-ID"].encode() != hostile
        assert len(answer.headers["X-Request-ID"]) == 32
    problem = await client.get("/api/auth/me", headers={"X-Request-ID": "req-42"})
    assert problem.headers["X-Request-ID"] == "req-42"


async def test_unexpected_errors_are_problem_json_with_request_id(make_app: AppFactory) -> None:
    app: FastAPI = make_app()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom: secret internals")

    async with client_for(app) as c:
        answer = await c.get("/boom", headers={"X-Request-ID": "req-boom"})
    body = assert_problem(answer, 500, "internal.error")
    assert "kaboom" not in answer.text
    assert body["detail"] == "An unexpected error occurred."
    assert answer.headers["X-Request-ID"] == "req-boom"


async def test_cors_allows_only_configured_origins(make_app: AppFactory) -> None:
    app = make_app(allowed_origins=["https://app.example.com"])
    async with client_for(app) as c:
        allowed = await c.options(
            "/api/auth/login",
            headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
        )
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        assert allowed.headers["access-control-allow-credentials"] == "true"
        refused = await c.options(
            "/api/auth/login",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in refused.headers
