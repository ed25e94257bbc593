"""The WebSocket side of uvicorn as ``atelier serve`` runs it, with a shared-frame write.

Fanning one event out through ASGI costs every socket a coroutine, Starlette's and uvicorn's
send wrappers and a frame encoding, though the bytes on the wire are the same for all of a
user's sockets: a server's frames are unmasked, and with compression off nothing in a frame
depends on the connection. ``RealtimeWebSocketProtocol`` is uvicorn's sans-I/O implementation
(the ``websockets`` library's protocol) plus one ASGI scope extension, ``WRITE_EXTENSION``:
``write(frame: bytes) -> bool`` puts an already encoded frame straight into the socket's
transport, or answers False when the socket cannot take it now (its transport buffer is above
uvicorn's high-water mark, or the socket is closing), and the caller keeps the frame for the
socket's own task, which sends it the ASGI way once it can. That bounds what one socket holds:
the transport's buffer, then the hub's per-socket queue, past which the hub closes the socket
(``SlowConsumer``, 1013). ``abort()`` drops the connection without a closing handshake, for a
client that does not read even its close frame (ASGI's close would wait for it forever).

Compression (permessage-deflate) stays off: it would make each socket's frames differ (a
per-connection deflate context) and cost each socket a compressor's memory, for task events of
a few hundred bytes. A server run with compression on offers no write extension; the hub then
sends through ASGI as before.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

WRITE_EXTENSION = "atelier.websocket.write"


def encode_text_frame(text: str) -> bytes:
    """One unfragmented, unmasked text frame, as a server sends it without extensions."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


class RealtimeWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol offering ``WRITE_EXTENSION`` to the app."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The app's task was created above but has not run yet: it sees the extension. With
        # compression configured a client may negotiate it, and frames would not be shareable.
        scope = getattr(self, "scope", None)
        if scope is not None and not self.config.ws_per_message_deflate:
            scope["extensions"][WRITE_EXTENSION] = {
                "write": self.write_frame,
                "abort": self.abort,
            }

    def write_frame(self, frame: bytes) -> bool:
        """Write one encoded frame now; False if the socket cannot take it without waiting."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(frame)
        return True

    def abort(self) -> None:
        """Drop the connection now, with whatever is still buffered for it."""
        self.close_sent = True
        self.transport.abort()


# The WebSocket options of ``atelier serve``, also used by the live test server and the
# fan-out benchmark's servers (Atelier and the bare reference alike).
WEBSOCKET_OPTIONS: dict[str, Any] = {
    "ws": RealtimeWebSocketProtocol,
    "ws_per_message_deflate": False,
    "ws_ping_interval": 25,
    "ws_ping_timeout": 20,
}
