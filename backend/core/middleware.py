"""Request context: request id, access log line, Prometheus request metrics.

A plain ASGI middleware rather than ``BaseHTTPMiddleware``: it does not buffer bodies and it
sees the matched route, so metrics are labelled by route template instead of raw path.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.core.errors import RequestTooLarge, problem_response
from backend.core.logging import cloud_trace
from backend.ops.metrics import REQUEST_COUNT, REQUEST_LATENCY

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = structlog.get_logger("atelier.request")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


# Methods a client may send anything as; others are one label, like unmatched paths.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_Series = tuple[Any, Any]
# Each (method, route, status)'s counter and histogram, looked up once: prometheus_client's
# labels() locks and builds its key on every call. Bounded by the routes' templates.
_series: dict[tuple[str, str, int], _Series] = {}


def _metric_series(method: str, route: str, status: int) -> _Series:
    key = (method, route, status)
    found = _series.get(key)
    if found is None:
        found = _series[key] = (
            REQUEST_COUNT.labels(method=method, route=route, status=str(status)),
            REQUEST_LATENCY.labels(method=method, route=route),
        )
    return found


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths are folded into one label so scanners cannot blow up metric cardinality.
    return path if isinstance(path, str) else "<unmatched>"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, gcp_project: str | None = None) -> None:
        self.app = app
        self.gcp_project = gcp_project

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            request_id=request_id,
            **cloud_trace(_header(scope, b"x-cloud-trace-context"), self.gcp_project),
        )
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        status = 500
        started = False
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                if status == 204:
                    # FastAPI builds a 204 as an empty JSONResponse, still labelled as JSON.
                    del headers["content-type"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            # Answered here rather than by Starlette's outer error middleware so that even a 500
            # is problem+json and carries the request id.
            log.exception("unhandled_error", path=scope["path"], error=type(exc).__name__)
            if started:
                raise
            response = problem_response(500, "internal.error", "An unexpected error occurred.")
            await response(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = _route_template(scope)
            method = scope["method"]
            count, latency = _metric_series(
                method if method in _METHODS else "OTHER", route, status
            )
            count.inc()
            latency.observe(elapsed)
            log.info(
                "request",
                method=method,
                path=scope["path"],
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )


# JSON and form bodies are small by nature; only file uploads (multipart) may be large.
MAX_BODY_BYTES = 1024 * 1024


class BodyLimitMiddleware:
    """Refuse a body past its bound before reading it: by ``Content-Length`` up front, and by
    counting what arrives for a chunked body. Multipart bodies get the larger ``max_multipart``
    (the endpoints that take files check their own, tighter, limits on top)."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES, max_multipart: int
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_multipart = max_multipart

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_type = (_header(scope, b"content-type") or "").lower()
        limit = self.max_multipart if content_type.startswith("multipart/") else self.max_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            # Answered without a single receive(): nothing of the body is read.
            response = problem_response(
                413,
                RequestTooLarge.code,
                f"The request body is larger than the limit of {limit} bytes.",
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)
