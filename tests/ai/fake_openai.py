"""A local stand-in for the OpenAI API, speaking its REST wire format.

It answers ``POST /v1/chat/completions`` (JSON in, a chat completion out) and
``POST /v1/images/edits`` (multipart form in, ``b64_json`` images out) with OpenAI's field
names and its error envelope (``{"error": {"message", "type", "param", "code"}}``), so tests
drive the real openai SDK over real HTTP. Every request is recorded with its parsed body (JSON,
or the multipart parts); answers are scripted per request and otherwise default to a caption or
a small PNG, whichever the route gives.

Like the Gemini fake it serves from a daemon thread, apart from the test's event loop.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.ai.fake_gemini import solid_png

CHAT_PATH = "/v1/chat/completions"
EDIT_PATH = "/v1/images/edits"
DEFAULT_CAPTION = "A fake OpenAI caption of a test image."
_STALL_CEILING = 30.0


@dataclass(frozen=True)
class FormPart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode()


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any  # the parsed JSON body, or None
    form: list[FormPart]  # the multipart parts, in order, or []

    def field(self, name: str) -> str | None:
        found = [part.text for part in self.form if part.name == name and part.filename is None]
        return found[0] if found else None

    def files(self) -> list[FormPart]:
        return [part for part in self.form if part.filename is not None]

    def image_urls(self) -> list[str]:
        """The image URLs (data URLs) of every chat message part."""
        urls = []
        for message in (self.json or {}).get("messages", []):
            content = message.get("content")
            if isinstance(content, list):
                urls += [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
        return urls

    def texts(self) -> list[str]:
        texts = []
        for message in (self.json or {}).get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts += [p["text"] for p in content if p.get("type") == "text"]
        return texts


@dataclass(frozen=True)
class Reply:
    """One scripted answer: ``kind`` is text, image, error, refusal, filtered, malformed, raw,
    empty or stall."""

    kind: str
    text: str = ""
    image: bytes = b""
    status: int = 200
    code: str | None = None
    error_type: str = "invalid_request_error"
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    replies: deque[Reply] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


def data_url_bytes(url: str) -> tuple[str, bytes]:
    """(MIME type, bytes) of a base64 data URL."""
    head, _, payload = url.partition(",")
    assert head.startswith("data:"), head
    assert head.endswith(";base64"), head
    return head[5:-7], base64.b64decode(payload, validate=True)


class FakeOpenAI:
    def __init__(self) -> None:
        self._state = _State()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-openai", daemon=True
        )

    @property
    def base_url(self) -> str:
        """What OPENAI_BASE_URL is set to: the SDK appends ``/chat/completions`` and so on."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._state.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def reset(self) -> None:
        state = self._state
        state.release.set()
        with state.lock:
            state.replies.clear()
            state.requests.clear()
            state.release = threading.Event()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    # --- scripting ---------------------------------------------------------------------------

    def push(self, reply: Reply, times: int = 1) -> None:
        with self._state.lock:
            self._state.replies.extend([reply] * times)

    def reply_text(self, text: str) -> None:
        self.push(Reply("text", text=text))

    def reply_image(self, image: bytes | None = None) -> None:
        self.push(Reply("image", image=image or solid_png()))

    def reply_error(
        self,
        status: int,
        *,
        code: str | None = None,
        error_type: str = "invalid_request_error",
        message: str = "",
        times: int = 1,
        retry_after_ms: int | None = 5,
    ) -> None:
        """An error in OpenAI's envelope; ``retry_after_ms`` keeps SDK retries fast."""
        headers = (("retry-after-ms", str(retry_after_ms)),) if retry_after_ms else ()
        reply = Reply(
            "error",
            status=status,
            code=code,
            error_type=error_type,
            text=message or f"fake error {status}",
            headers=headers,
        )
        self.push(reply, times)

    def reply_refusal(self, text: str = "I can't help with that.") -> None:
        self.push(Reply("refusal", text=text))

    def reply_filtered(self) -> None:
        """A chat answer cut by the content filter (``finish_reason: content_filter``)."""
        self.push(Reply("filtered"))

    def reply_malformed(self, *, times: int = 1) -> None:
        self.push(Reply("malformed"), times)

    def reply_raw(self, body: str, *, status: int = 200) -> None:
        self.push(Reply("raw", text=body, status=status))

    def reply_empty(self) -> None:
        """A well-formed answer carrying nothing: no caption text, or no image data."""
        self.push(Reply("empty"))

    def stall(self, seconds: float = _STALL_CEILING, *, times: int = 1) -> None:
        self.push(Reply("stall", seconds=seconds), times)

    # --- serving -----------------------------------------------------------------------------

    def _next_reply(self, request: RecordedRequest) -> tuple[Reply, threading.Event]:
        with self._state.lock:
            self._state.requests.append(request)
            release = self._state.release
            if self._state.replies:
                return self._state.replies.popleft(), release
        if request.path == EDIT_PATH:
            return Reply("image", image=solid_png()), release
        return Reply("text", text=DEFAULT_CAPTION), release

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                content_type = self.headers.get("Content-Type", "")
                body: Any = None
                form: list[FormPart] = []
                if content_type.startswith("multipart/form-data"):
                    form = _parse_form(content_type, raw)
                elif raw:
                    body = json.loads(raw)
                path = self.path.split("?", 1)[0]
                request = RecordedRequest(
                    method="POST",
                    path=path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    json=body,
                    form=form,
                )
                reply, release = fake._next_reply(request)
                if path not in (CHAT_PATH, EDIT_PATH):
                    self._send(404, _error(f"Unknown path {path}", "invalid_request_error", None))
                    return
                self._answer(path, request, reply, release)

            def _answer(
                self, path: str, request: RecordedRequest, reply: Reply, release: threading.Event
            ) -> None:
                if reply.kind == "stall":
                    release.wait(reply.seconds)
                    self.close_connection = True
                    return
                if reply.kind == "error":
                    self._send(
                        reply.status,
                        _error(reply.text, reply.error_type, reply.code),
                        reply.headers,
                    )
                elif reply.kind == "malformed":
                    self._send_raw(200, b'{"id": "chatcmpl-x", "choices": [{"mess')
                elif reply.kind == "raw":
                    self._send_raw(reply.status, reply.text.encode())
                elif path == EDIT_PATH:
                    self._send(200, _images_body(reply))
                else:
                    model = str((request.json or {}).get("model", ""))
                    self._send(200, _chat_body(reply, model))

            def _send(
                self,
                status: int,
                payload: dict[str, Any],
                headers: tuple[tuple[str, str], ...] = (),
            ) -> None:
                self._send_raw(status, json.dumps(payload).encode(), headers)

            def _send_raw(
                self, status: int, data: bytes, headers: tuple[tuple[str, str], ...] = ()
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-request-id", "req_fake")
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _parse_form(content_type: str, raw: bytes) -> list[FormPart]:
    message = BytesParser(policy=policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    parts = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        parts.append(
            FormPart(
                name=str(part.get_param("name", header="content-disposition") or ""),
                filename=part.get_filename(),
                content_type=part.get_content_type() if part.get("content-type") else None,
                data=payload if isinstance(payload, bytes) else b"",
            )
        )
    return parts


def _error(message: str, error_type: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def _chat_body(reply: Reply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    finish = "stop"
    if reply.kind == "text":
        message["content"] = reply.text
    elif reply.kind == "refusal":
        message["refusal"] = reply.text
    elif reply.kind == "filtered":
        finish = "content_filter"
    elif reply.kind == "empty":
        message["content"] = ""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 12, "total_tokens": 112},
    }


def _images_body(reply: Reply) -> dict[str, Any]:
    data = [] if reply.kind == "empty" else [{"b64_json": base64.b64encode(reply.image).decode()}]
    return {
        "created": int(time.time()),
        "data": data,
        "output_format": "png",
        "usage": {"input_tokens": 300, "output_tokens": 1056, "total_tokens": 1356},
    }
