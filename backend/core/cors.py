"""CORS for the API, but not for public delivery URLs.

Starlette's CORS middleware answers a request carrying ``Origin`` with that origin echoed and
``Vary: Origin``. On ``/d/`` that would split a CDN's cache per embedding site for bytes that are
the same for everyone, and refuse sites outside ``ALLOWED_ORIGINS`` that may embed them anyway.
Delivery answers carry ``Access-Control-Allow-Origin: *`` themselves (no credentials involved).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message, Receive, Scope, Send

PUBLIC_PREFIX = "/d/"


class ApiCORSMiddleware(CORSMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["path"].startswith(PUBLIC_PREFIX):
                await self.app(scope, receive, send)
                return
            if not any(name == b"origin" for name, _ in scope["headers"]):
                await self.app(scope, receive, _vary_on_origin(send))
                return
        await super().__call__(scope, receive, send)


def _vary_on_origin(send: Send) -> Send:
    """What Starlette's CORS answer to a request without ``Origin`` adds (``Vary: Origin``),
    without parsing the request's headers into objects on every same-origin request."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if any(name.lower() == b"vary" for name, _ in headers):
                message["headers"] = headers
                mutable = MutableHeaders(scope=message)
                mutable["Vary"] = ", ".join([*mutable.getlist("Vary"), "Origin"])
            else:
                headers.append((b"vary", b"Origin"))
                message["headers"] = headers
        await send(message)

    return sending
