"""A local HTTP(S) origin on loopback for fetcher and webhook tests.

``Origin`` serves the shapes a remote image host can take (good images, huge, slow and endless
bodies, wrong types, redirect chains and loops, error statuses) and a POST sink that records
webhook deliveries and answers scripted statuses. It runs a ``ThreadingHTTPServer`` in a daemon
thread, so it never competes with the test's event loop, and counts the bytes it sends per
request so tests can prove a client stopped reading.

GET routes:
    /image.jpg /image.png /image.gif   small valid images
    any path in ``files``              its bytes and content type
    /huge.jpg                          ``huge_bytes`` of JPEG, Content-Length announced
    /huge-unannounced.jpg              the same without Content-Length (ends at close)
    /slow.jpg?interval=0.05            a JPEG trickled one byte per interval
    /endless.jpg                       chunked JPEG bytes until the client goes away
    /wrong/html-type                   image bytes served as text/html
    /wrong/html-body                   HTML served as image/jpeg
    /wrong/no-type                     image bytes with no Content-Type
    /wrong/gzip                        a gzip-encoded JPEG
    /redirect/<n>?status=302           n redirects, then /image.jpg
    /loop/a /loop/b                    redirect to each other
    /to?url=<target>&status=302        one redirect to an arbitrary target
    /to-nowhere                        a 302 without Location
    /status/<code>                     that status with a short text body
POST (any path) goes to the sink: recorded in ``received``; answers the next status queued by
``answer()`` (200 when none is queued); ``?body=<n>`` makes the answer n bytes long and
``?delay=<s>`` holds it back.
"""

from __future__ import annotations

import gzip
import io
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image

_CHUNK = 64 * 1024
_ZEROS = bytes(_CHUNK)
_JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
# Long enough for any test, short enough that a forgotten stream ends on its own.
_STREAM_CEILING = 60.0


def encode_image(fmt: str, size: tuple[int, int] = (32, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 80, 40)).save(buffer, format=fmt)
    return buffer.getvalue()


@dataclass
class Seen:
    """One request as the origin saw it, with what it sent back."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    status: int = 0
    bytes_sent: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def host(self) -> str:
        return self.headers.get("host", "")


@dataclass
class _Answer:
    status: int
    location: str | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    origin: Origin

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        tls = self.origin.tls
        if tls is not None:
            # The handshake happens in the handler's thread, so a client that refuses the
            # certificate never stalls the accept loop.
            sock = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hang up mid-body on purpose in these tests; that is not an error here.
        pass


class Origin:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        huge_bytes: int = 50 * 1024 * 1024,
    ) -> None:
        self.tls = tls
        self.huge_bytes = huge_bytes
        self.jpeg = encode_image("JPEG")
        self.png = encode_image("PNG")
        self.gif = encode_image("GIF")
        # More images by path (bytes, content type), for tests that need particular ones.
        self.files: dict[str, tuple[bytes, str]] = {}
        self._lock = threading.Lock()
        self._requests: list[Seen] = []
        self._answers: deque[_Answer] = deque()
        self._stopping = threading.Event()
        self._server = _Server((host, 0), _handler_for(self))
        self._server.origin = self
        # A short poll keeps stop() quick; the default half second adds up over many tests.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="test-origin",
            daemon=True,
        )

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Origin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Origin:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- addresses ---------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def url(self, path: str, *, host: str | None = None) -> str:
        """``path`` on this origin; ``host`` names it differently (a test resolver maps it)."""
        if host is None:
            return self.base_url + path
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    # --- scripting and records ---------------------------------------------------------------

    def answer(self, *statuses: int, location: str | None = None) -> None:
        """Queue the sink's next answers; ``location`` goes on the 3xx ones."""
        with self._lock:
            self._answers.extend(_Answer(s, location) for s in statuses)

    @property
    def requests(self) -> list[Seen]:
        """Every request so far, GET and POST."""
        with self._lock:
            return list(self._requests)

    @property
    def received(self) -> list[Seen]:
        """What the POST sink received."""
        return [seen for seen in self.requests if seen.method == "POST"]

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until every request so far has been answered (or abandoned by its client)."""
        deadline = time.monotonic() + timeout
        for seen in self.requests:
            if not seen.done.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"origin still busy with {seen.method} {seen.path}")

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._answers.clear()

    # --- used by the handler -----------------------------------------------------------------

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self._requests.append(seen)

    def _next_answer(self) -> _Answer:
        with self._lock:
            return self._answers.popleft() if self._answers else _Answer(200)


def _handler_for(origin: Origin) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.origin = origin
    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    origin: Origin
    seen: Seen

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # --- plumbing ----------------------------------------------------------------------------

    def _begin(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen = Seen(self.command, self.path, headers, body)
        self.origin._record(self.seen)
        return parts.path, parse_qs(parts.query)

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.seen.status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _send(self, data: bytes) -> None:
        self.wfile.write(data)
        self.seen.bytes_sent += len(data)

    def _reply(self, status: int, body: bytes, content_type: str | None, **extra: str) -> None:
        headers = {"Content-Length": str(len(body))}
        if content_type is not None:
            headers["Content-Type"] = content_type
        headers.update(extra)
        self._head(status, headers)
        self._send(body)

    def _redirect(self, location: str | None, status: int = 302) -> None:
        extra = {"Location": location} if location is not None else {}
        self._reply(status, b"", "text/plain", **extra)

    def _streaming(self) -> bool:
        return not self.origin._stopping.is_set()

    def _finish(self) -> None:
        self.seen.done.set()

    # --- methods -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        try:
            path, query = self._begin()
            self._route(path, query)
        except OSError:
            # The client hung up: exactly what the size and time tests provoke.
            pass
        finally:
            self._finish()

    def do_POST(self) -> None:
        try:
            _path, query = self._begin()
            delay = float(query.get("delay", ["0"])[0])
            size = int(query.get("body", ["2"])[0])
            answer = self.origin._next_answer()
            if delay:
                self.origin._stopping.wait(delay)
            extra = {"Location": answer.location} if answer.location else {}
            headers = {"Content-Length": str(size), "Content-Type": "text/plain", **extra}
            self._head(answer.status, headers)
            self._send_zeros(size)
        except OSError:
            pass
        finally:
            self._finish()

    # --- routes ------------------------------------------------------------------------------

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        origin = self.origin
        images = {
            "/image.jpg": (origin.jpeg, "image/jpeg"),
            "/image.png": (origin.png, "image/png"),
        }
        images["/image.gif"] = (origin.gif, "image/gif")
        images.update(origin.files)
        if path in images:
            data, content_type = images[path]
            self._reply(200, data, content_type)
        elif path == "/huge.jpg":
            self._head(
                200, {"Content-Type": "image/jpeg", "Content-Length": str(origin.huge_bytes)}
            )
            self._send(_JPEG_HEAD)
            self._send_zeros(origin.huge_bytes - len(_JPEG_HEAD))
        elif path == "/huge-unannounced.jpg":
            self._head(200, {"Content-Type": "image/jpeg"})
            self._send(_JPEG_HEAD)
            self._send_zeros(origin.huge_bytes - len(_JPEG_HEAD))
        elif path == "/slow.jpg":
            self._slow(float(query.get("interval", ["0.05"])[0]))
        elif path == "/endless.jpg":
            self._endless()
        elif path == "/wrong/html-type":
            self._reply(200, origin.jpeg, "text/html; charset=utf-8")
        elif path == "/wrong/html-body":
            self._reply(200, b"<!doctype html><html><body>not an image</body></html>", "image/jpeg")
        elif path == "/wrong/no-type":
            self._reply(200, origin.jpeg, None)
        elif path == "/wrong/gzip":
            self._reply(
                200, gzip.compress(origin.jpeg), "image/jpeg", **{"Content-Encoding": "gzip"}
            )
        elif path.startswith("/redirect/"):
            hops = int(path.rsplit("/", 1)[1])
            status = int(query.get("status", ["302"])[0])
            target = f"/redirect/{hops - 1}?status={status}" if hops > 1 else "/image.jpg"
            self._redirect(target, status)
        elif path == "/loop/a":
            self._redirect("/loop/b")
        elif path == "/loop/b":
            self._redirect(f"{origin.base_url}/loop/a")
        elif path == "/to":
            self._redirect(query["url"][0], int(query.get("status", ["302"])[0]))
        elif path == "/to-nowhere":
            self._redirect(None)
        elif path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            self._reply(status, f"status {status}\n".encode(), "text/plain")
        else:
            self._reply(404, b"not found\n", "text/plain")

    def _send_zeros(self, count: int) -> None:
        while count > 0 and self._streaming():
            piece = _ZEROS if count >= _CHUNK else _ZEROS[:count]
            self._send(piece)
            count -= len(piece)

    def _slow(self, interval: float) -> None:
        body = self.origin.jpeg
        self._head(200, {"Content-Type": "image/jpeg", "Content-Length": str(len(body))})
        deadline = time.monotonic() + _STREAM_CEILING
        for index in range(len(body)):
            if not self._streaming() or time.monotonic() > deadline:
                return
            self._send(body[index : index + 1])
            self.origin._stopping.wait(interval)

    def _endless(self) -> None:
        self._head(200, {"Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"})
        self._send(b"%x\r\n%s\r\n" % (len(_JPEG_HEAD), _JPEG_HEAD))
        frame = b"%x\r\n%s\r\n" % (_CHUNK, _ZEROS)
        deadline = time.monotonic() + _STREAM_CEILING
        while self._streaming() and time.monotonic() < deadline:
            self._send(frame)
