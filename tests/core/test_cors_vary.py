"""The API's CORS answer to same-origin requests (no ``Origin``) is Starlette's own: ``Vary:
Origin`` added, joined with a ``Vary`` the endpoint set, and nothing else."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from backend.core.cors import ApiCORSMiddleware

ORIGINS = ["https://app.example.com"]


def answer(request: Request) -> PlainTextResponse:
    vary = request.query_params.get("vary")
    return PlainTextResponse("ok", headers={"Vary": vary} if vary else None)


def app_with(middleware: type[CORSMiddleware]) -> Starlette:
    app = Starlette(routes=[Route("/x", answer)])
    app.add_middleware(middleware, allow_origins=ORIGINS, allow_credentials=True)
    return app


async def headers_of(app: Starlette, **request: object) -> list[tuple[str, str]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/x", **request)  # type: ignore[arg-type]
    return sorted((k, v) for k, v in response.headers.multi_items() if k != "content-length")


async def test_same_origin_answers_match_starlettes() -> None:
    ours, theirs = app_with(ApiCORSMiddleware), app_with(CORSMiddleware)
    for request in (
        {},
        {"params": {"vary": "Accept-Encoding"}},
        {"headers": {"Origin": "https://app.example.com"}},
        {"headers": {"Origin": "https://evil.example"}, "params": {"vary": "Cookie"}},
    ):
        assert await headers_of(ours, **request) == await headers_of(theirs, **request), request
    assert ("vary", "Origin") in await headers_of(ours)
    assert ("vary", "Accept-Encoding, Origin") in await headers_of(
        ours, params={"vary": "Accept-Encoding"}
    )
