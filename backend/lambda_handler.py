"""AWS Lambda entry point for the HTTP API: API Gateway HTTP API (payload 2.0), REST API
(payload 1.0) and Function URLs, on the default stage or a named one (``/prod/...``).

Only plain HTTP runs here: WebSockets need a long-lived connection and background tasks need a
worker process, so those stay on Cloud Run, ECS or any host running ``atelier worker``; ``/ws``
answers a problem saying so. The image is built from ``Dockerfile.lambda``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from fastapi import FastAPI
from mangum import Mangum
from mangum.adapter import DEFAULT_TEXT_MIME_TYPES
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.config import Settings
from backend.core.errors import AppError, problem_responses
from backend.main import create_app

WEBSOCKET_PATH = "/ws"


class RealtimeUnsupported(AppError):
    status = 501
    code = "realtime.unsupported_on_lambda"


def _websocket_unsupported() -> None:
    raise RealtimeUnsupported(
        "WebSockets do not run on AWS Lambda. Connect /ws to a long-running deployment of the "
        "same image (Cloud Run, ECS or any host running `atelier serve`) that shares this "
        "REDIS_URL and DATABASE_URL."
    )


def _stage_prefix(event: dict[str, Any]) -> str:
    """``/prod`` for a named API Gateway stage, ``""`` for ``$default`` and Function URLs."""
    stage = (event.get("requestContext") or {}).get("stage")
    if not isinstance(stage, str) or not stage or stage == "$default":
        return ""
    return f"/{stage}"


class StagePath:
    """Serve the app under the API Gateway stage.

    An HTTP API with a named stage sends ``/prod/healthz`` as the path; a REST API sends
    ``/healthz`` with the stage only in ``requestContext``. Either way the stage becomes the
    ASGI ``root_path``: routing matches without it, and URLs the app builds (docs, redirects)
    keep it, since that is where clients reach the app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        prefix = _stage_prefix(scope.get("aws.event") or {})
        if prefix and scope["type"] == "http":
            scope = {**scope, "root_path": prefix}
        await self.app(scope, receive, send)


def build_app(settings: Settings) -> FastAPI:
    app = create_app(settings)
    # API Gateway delivers a WebSocket handshake as a plain GET: without this it would be a 404.
    app.add_api_route(
        WEBSOCKET_PATH,
        _websocket_unsupported,
        methods=["GET"],
        include_in_schema=False,
        responses=problem_responses(501),
    )
    return app


# Settings() rather than the cached get_settings(): the function reads its environment once per
# cold start, and nothing else in the process may have populated the cache first.
app = build_app(Settings())

# Mangum runs the lifespan on every invocation, which would close the pools after each request;
# with it off, Resources creates its clients on first use and keeps them for warm starts.
# Error bodies are application/problem+json, which Mangum would otherwise base64-encode as binary.
adapter = Mangum(
    StagePath(app),
    lifespan="off",
    text_mime_types=[*DEFAULT_TEXT_MIME_TYPES, "application/problem+json"],
)

# Mangum drives each request with the calling thread's current event loop. The lazily created
# clients (database pool, Redis, HTTP sessions) are bound to the loop they were first used on,
# so every invocation must run on the same loop, whichever thread the runtime (or a test) uses.
_loop = asyncio.new_event_loop()
_lock = threading.Lock()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with _lock:
        asyncio.set_event_loop(_loop)
        try:
            return adapter(event, context)
        finally:
            # Leave the caller's thread as it was; the loop itself stays open for the next call.
            asyncio.set_event_loop(None)
