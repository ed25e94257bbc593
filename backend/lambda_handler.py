"""AWS Lambda entry point for the HTTP API (API Gateway HTTP API v2 or a Function URL).

Only plain HTTP runs here: WebSockets need a long-lived connection and background tasks need a
worker process, so those stay on Cloud Run, ECS or any host running ``atelier worker``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from mangum import Mangum
from mangum.adapter import DEFAULT_TEXT_MIME_TYPES

from backend.config import Settings
from backend.main import create_app

# Settings() rather than the cached get_settings(): the function reads its environment once per
# cold start, and nothing else in the process may have populated the cache first.
app = create_app(Settings())

# Mangum runs the lifespan on every invocation, which would close the pools after each request;
# with it off, Resources creates its clients on first use and keeps them for warm starts.
# Error bodies are application/problem+json, which Mangum would otherwise base64-encode as binary.
adapter = Mangum(
    app,
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
