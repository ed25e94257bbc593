"""The client's address behind a known number of proxies, taken from the right.

Every proxy appends the address it received the request from to ``X-Forwarded-For``; whatever
stands left of the entries our own proxies wrote was written by the client and can be anything.
With ``TRUSTED_PROXY_HOPS=N`` (Cloud Run: 1) the client is the Nth entry from the right. With 0,
the headers are ignored and the peer of the connection is the client. The scope is changed in
place, so the rate limits, the request log and uvicorn's access log all see the same address.
"""

from __future__ import annotations

import ipaddress

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send


def _entries(scope: Scope, name: bytes) -> list[str]:
    # Several headers of one name count as one comma-separated list, in order.
    values = [v.decode("latin-1") for k, v in scope["headers"] if k == name]
    return [entry.strip() for value in values for entry in value.split(",") if entry.strip()]


def _address(entry: str) -> str | None:
    """The IP of one X-Forwarded-For entry (``[v6]:port`` and ``v4:port`` forms included)."""
    if entry.startswith("["):
        entry = entry[1 : entry.find("]")] if "]" in entry else ""
    elif entry.count(":") == 1:
        entry = entry.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None


def client_from(forwarded_for: list[str], hops: int) -> str | None:
    """The Nth entry from the right, or None when fewer proxies than expected wrote one."""
    if hops < 1 or len(forwarded_for) < hops:
        return None
    return _address(forwarded_for[-hops])


class TrustedProxyMiddleware:
    def __init__(self, app: ASGIApp, *, hops: int) -> None:
        self.app = app
        self.hops = hops

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            if self.hops > 0:
                self._rewrite(scope)
            client = scope.get("client")
            if client:
                structlog.contextvars.bind_contextvars(client_ip=client[0])
        await self.app(scope, receive, send)

    def _rewrite(self, scope: Scope) -> None:
        address = client_from(_entries(scope, b"x-forwarded-for"), self.hops)
        if address is not None:
            scope["client"] = (address, 0)
        protos = _entries(scope, b"x-forwarded-proto")
        proto = protos[-min(self.hops, len(protos))].lower() if protos else None
        if proto in ("http", "https"):
            secure = proto == "https"
            if scope["type"] == "websocket":
                scope["scheme"] = "wss" if secure else "ws"
            else:
                scope["scheme"] = proto
