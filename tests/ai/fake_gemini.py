"""A local stand-in for the Gemini API, speaking its REST wire format.

It answers ``POST /{version}/models/{model}:generateContent`` the way the real service does
(camelCase JSON, base64 ``inlineData``, ``finishReason``, ``promptFeedback``, Google's error
envelope), so tests drive the real google-genai SDK over real HTTP. Every request is recorded;
answers are scripted per request and fall back to a text or image answer chosen from what the
request asked for.

It runs a ``ThreadingHTTPServer`` in a daemon thread: the SDK under test is async, and a server
on its own thread never competes with the test's event loop.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

_ROUTE = re.compile(r"^/(?P<version>[^/]+)/models/(?P<model>[^/:]+):generateContent$")
# How long a stalled answer waits at most; reset() and stop() release it earlier.
_STALL_CEILING = 30.0

DEFAULT_CAPTION = "A fake caption of a test image."


def solid_png(
    width: int = 64, height: int = 48, bgr: tuple[int, int, int] = (40, 160, 220)
) -> bytes:
    """A small PNG of one colour: what the fake hands back as an edited image by default."""
    pixels = np.full((height, width, 3), bgr, dtype=np.uint8)
    ok, buffer = cv2.imencode(".png", pixels)
    assert ok
    return bytes(buffer.tobytes())


def decode_base64(text: str) -> bytes:
    standard = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    version: str | None
    model: str | None
    headers: dict[str, str]
    body: Any  # the parsed JSON, or the raw text when it was not JSON

    def parts(self) -> list[dict[str, Any]]:
        """All parts of all contents, in order."""
        found: list[dict[str, Any]] = []
        if isinstance(self.body, dict):
            for content in self.body.get("contents", []):
                found.extend(content.get("parts", []))
        return found

    def texts(self) -> list[str]:
        return [part["text"] for part in self.parts() if "text" in part]

    def inline_images(self) -> list[tuple[str, bytes]]:
        """(mime type, decoded bytes) of every inline part."""
        found = []
        for part in self.parts():
            blob = part.get("inlineData") or part.get("inline_data")
            if blob is None:
                continue
            # The service reads proto JSON, which takes either field spelling and either base64
            # alphabet; google-genai 3.4 sends ``mime_type`` and URL-safe base64.
            mime_type = blob.get("mimeType") or blob.get("mime_type")
            found.append((str(mime_type), decode_base64(blob["data"])))
        return found

    def generation_config(self) -> dict[str, Any]:
        if isinstance(self.body, dict):
            return dict(self.body.get("generationConfig", {}))
        return {}


@dataclass(frozen=True)
class Reply:
    """One scripted answer: ``kind`` is text, image, error, blocked, malformed, empty, raw,
    disconnect or stall."""

    kind: str
    text: str = ""
    image: bytes = b""
    mime_type: str = "image/png"
    status: int = 200
    reason: str = ""
    seconds: float = 0.0


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    replies: deque[Reply] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


_ERROR_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class FakeGemini:
    def __init__(self) -> None:
        self._state = _State()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        # Handler threads must not keep the process alive or make stop() wait for a stall.
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-gemini", daemon=True
        )

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeGemini:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._state.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def reset(self) -> None:
        """Forget requests and scripted answers, and end any stall still in progress."""
        state = self._state
        state.release.set()
        with state.lock:
            state.replies.clear()
            state.requests.clear()
            state.release = threading.Event()

    # --- assertions --------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    # --- scripting: each call queues answers for the next requests, in order ----------------

    def push(self, reply: Reply, times: int = 1) -> None:
        with self._state.lock:
            self._state.replies.extend([reply] * times)

    def reply_text(self, text: str, *, times: int = 1) -> None:
        self.push(Reply("text", text=text), times)

    def reply_image(
        self, image: bytes | None = None, *, mime_type: str = "image/png", text: str = ""
    ) -> None:
        self.push(Reply("image", image=image or solid_png(), mime_type=mime_type, text=text))

    def reply_error(self, status: int, *, times: int = 1, message: str = "") -> None:
        self.push(Reply("error", status=status, text=message or f"fake error {status}"), times)

    def reply_blocked(self, reason: str = "SAFETY", *, where: str = "prompt") -> None:
        """A safety block: ``where`` is "prompt" (promptFeedback) or "candidate" (finishReason)."""
        self.push(Reply("blocked", reason=reason, text=where))

    def reply_malformed(self, *, times: int = 1) -> None:
        self.push(Reply("malformed"), times)

    def reply_raw(self, body: str, *, status: int = 200) -> None:
        """Exactly ``body`` as the response, for shapes the other helpers do not make."""
        self.push(Reply("raw", text=body, status=status))

    def disconnect(self, *, times: int = 1) -> None:
        """Close the connection without answering."""
        self.push(Reply("disconnect"), times)

    def reply_empty(self, finish_reason: str = "STOP") -> None:
        """A candidate with no usable part: no text, no image."""
        self.push(Reply("empty", reason=finish_reason))

    def stall(self, seconds: float = _STALL_CEILING, *, times: int = 1) -> None:
        """Accept the request and send nothing until ``seconds`` pass (or reset/stop)."""
        self.push(Reply("stall", seconds=seconds), times)

    # --- serving -----------------------------------------------------------------------------

    def _next_reply(self, request: RecordedRequest) -> tuple[Reply, threading.Event]:
        with self._state.lock:
            self._state.requests.append(request)
            release = self._state.release
            if self._state.replies:
                return self._state.replies.popleft(), release
        modalities = [
            str(m).upper() for m in request.generation_config().get("responseModalities", [])
        ]
        if "IMAGE" in modalities:
            return Reply("image", image=solid_png()), release
        return Reply("text", text=DEFAULT_CAPTION), release

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                del format, args  # keep the test output clean

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                match = _ROUTE.match(self.path.split("?", 1)[0])
                request = RecordedRequest(
                    method="POST",
                    path=self.path,
                    version=match["version"] if match else None,
                    model=match["model"] if match else None,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                reply, release = fake._next_reply(request)
                if match is None:
                    self._send_json(404, _error_body(404, f"no route for {self.path}"))
                    return
                self._answer(reply, release)

            def _answer(self, reply: Reply, release: threading.Event) -> None:
                if reply.kind == "stall":
                    release.wait(reply.seconds)
                    self.close_connection = True
                    return
                if reply.kind == "disconnect":
                    self.close_connection = True
                    return
                if reply.kind == "raw":
                    self._send_raw(reply.status, reply.text.encode())
                elif reply.kind == "error":
                    self._send_json(reply.status, _error_body(reply.status, reply.text))
                elif reply.kind == "malformed":
                    self._send_raw(200, b'{"candidates": [{"content": {"parts": [{"te')
                else:
                    self._send_json(200, _success_body(reply))

            def _send_json(self, status: int, payload: dict[str, Any]) -> None:
                self._send_raw(status, json.dumps(payload).encode())

            def _send_raw(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": status,
            "message": message,
            "status": _ERROR_STATUS.get(status, "UNKNOWN"),
        }
    }


def _usage(candidates_tokens: int) -> dict[str, Any]:
    return {
        "promptTokenCount": 270,
        "candidatesTokenCount": candidates_tokens,
        "totalTokenCount": 270 + candidates_tokens,
    }


def _success_body(reply: Reply) -> dict[str, Any]:
    body: dict[str, Any] = {"modelVersion": "fake-gemini", "responseId": "fake-response"}
    if reply.kind == "blocked" and reply.text == "prompt":
        body["promptFeedback"] = {"blockReason": reply.reason}
        body["usageMetadata"] = _usage(0)
        return body
    if reply.kind == "blocked":
        candidate: dict[str, Any] = {"finishReason": reply.reason, "index": 0}
    elif reply.kind == "empty":
        candidate = {"content": {"role": "model", "parts": []}, "finishReason": reply.reason}
    else:
        parts: list[dict[str, Any]] = []
        if reply.text:
            parts.append({"text": reply.text})
        if reply.kind == "image":
            encoded = base64.b64encode(reply.image).decode()
            parts.append({"inlineData": {"mimeType": reply.mime_type, "data": encoded}})
        candidate = {
            "content": {"role": "model", "parts": parts},
            "finishReason": "STOP",
            "index": 0,
        }
    body["candidates"] = [candidate]
    body["usageMetadata"] = _usage(1290 if reply.kind == "image" else 12)
    return body
