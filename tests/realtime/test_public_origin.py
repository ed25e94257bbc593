"""The web app served from PUBLIC_BASE_URL reaches /ws and the API from its own origin.

The documented deploy lists the browser app's domain in ALLOWED_ORIGINS, not the service's own
URL; the bundled app is served from that URL, so its origin must be allowed without being
listed (Cloud Run: https://SERVICE-HASH.a.run.app).
"""

from __future__ import annotations

from fastapi import FastAPI

from tests.conftest import AppFactory, client_for
from tests.live import serve
from tests.realtime.test_ws import handshake_status, register

SERVICE_URL = "https://atelier-api-xyz-ew.a.run.app"
APP_ORIGIN = "https://atelier.example.com"


def _deployed(factory: AppFactory) -> FastAPI:
    # As infra/api-service.yaml configures it.
    return factory(public_base_url=SERVICE_URL + "/", allowed_origins=[APP_ORIGIN])


async def test_the_public_origin_opens_the_websocket(make_live_app: AppFactory) -> None:
    async with serve(_deployed(make_live_app)) as base_url:
        alice = await register(base_url, "alice")
        assert await handshake_status(base_url, alice, origin=SERVICE_URL) == 101
        assert await handshake_status(base_url, alice, origin=APP_ORIGIN) == 101
        assert await handshake_status(base_url, alice, origin=SERVICE_URL + ":8443") == 403
        assert (
            await handshake_status(base_url, alice, origin="http://atelier-api-xyz-ew.a.run.app")
            == 403
        )


async def test_the_public_origin_passes_cors(make_app: AppFactory) -> None:
    async with client_for(_deployed(make_app)) as c:
        for origin in (SERVICE_URL, APP_ORIGIN):
            answer = await c.options(
                "/api/auth/login",
                headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
            )
            assert answer.headers["access-control-allow-origin"] == origin
        refused = await c.options(
            "/api/auth/login",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in refused.headers
