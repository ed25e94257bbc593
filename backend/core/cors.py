"""CORS for the API, but not for public delivery URLs.

Starlette's CORS middleware answers a request carrying ``Origin`` with that origin echoed and
``Vary: Origin``. On ``/d/`` that would split a CDN's cache per embedding site for bytes that are
the same for everyone, and refuse sites outside ``ALLOWED_ORIGINS`` that may embed them anyway.
Delivery answers carry ``Access-Control-Allow-Origin: *`` themselves (no credentials involved).
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

PUBLIC_PREFIX = "/d/"


class ApiCORSMiddleware(CORSMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PUBLIC_PREFIX):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
