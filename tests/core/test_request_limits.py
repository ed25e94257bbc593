"""Bounded requests: a JSON body past 1 MiB and oversized headers are refused before they are
read; file uploads keep their own, larger bound."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI

from backend.cli import HTTP_LIMITS, MAX_HEADER_BYTES
from backend.core.middleware import MAX_BODY_BYTES
from tests.auth.test_router import assert_problem
from tests.conftest import SignedIn
from tests.live import serve

TWENTY_MB = 20 * 1024 * 1024
CHUNK = 64 * 1024


class Pulled:
    """A request body of ``size`` bytes that counts how much of it the server pulled."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # A valid JSON document: the refusal must come from the size, not from a parse error.
        head = b'{"email": "a@example.com", "password": "'
        yield head
        self.pulled += len(head)
        while self.pulled < self.size - 2:
            chunk = b"x" * min(CHUNK, self.size - 2 - self.pulled)
            self.pulled += len(chunk)
            yield chunk
        self.pulled += 2
        yield b'"}'


async def test_chunked_json_to_login_is_refused_without_reading_it(
    client: httpx.AsyncClient,
) -> None:
    body = Pulled(TWENTY_MB)
    answer = await client.post(
        "/api/auth/login", content=body, headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in {k.lower() for k in answer.request.headers}
    assert_problem(answer, 413, "request.too_large")
    assert answer.headers["content-type"] == "application/problem+json"
    # The count stops one chunk past the limit: the other 19 MB were never pulled.
    assert MAX_BODY_BYTES < body.pulled <= MAX_BODY_BYTES + CHUNK + 64


async def test_declared_large_json_is_refused_before_any_byte(client: httpx.AsyncClient) -> None:
    body = Pulled(TWENTY_MB)
    answer = await client.post(
        "/api/auth/login",
        content=body,
        headers={"Content-Type": "application/json", "Content-Length": str(TWENTY_MB)},
    )
    assert_problem(answer, 413, "request.too_large")
    assert body.pulled == 0


async def test_json_under_the_limit_is_still_read(client: httpx.AsyncClient) -> None:
    padded = {"email": "nobody@example.com", "password": "x" * (MAX_BODY_BYTES - 100)}
    answer = await client.post("/api/auth/login", content=json.dumps(padded).encode())
    # Read and judged on its content (a wrong password / too long), not refused for its size.
    assert answer.status_code in (401, 422), answer.text
    assert answer.json()["code"] != "request.too_large"


async def test_multipart_keeps_the_upload_bound(alice: SignedIn) -> None:
    # 3 MB of file is over 1 MiB yet within the upload bound: the endpoint's own check answers.
    answer = await alice.client.post(
        "/api/images",
        files={"file": ("a.jpg", b"\xff\xd8" + b"\x00" * (3 * 1024 * 1024), "image/jpeg")},
        headers=alice.csrf,
    )
    assert answer.json()["code"] != "request.too_large"
    huge = await alice.client.post(
        "/api/images",
        content=Pulled(TWENTY_MB * 2),
        headers={
            **alice.csrf,
            "Content-Type": "multipart/form-data; boundary=x",
            "Content-Length": str(TWENTY_MB * 2),
        },
    )
    assert_problem(huge, 413, "request.too_large")


async def _send_huge_headers(base_url: str, total: int) -> tuple[int, bytes]:
    """Send a request with ``total`` bytes of headers; return (bytes sent, what came back)."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    sent = 0
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        line = b"X-Filler: " + b"a" * 8000 + b"\r\n"
        while sent < total:
            writer.write(line)
            sent += len(line)
            await asyncio.wait_for(writer.drain(), 10)
        writer.write(b"\r\n")
        await asyncio.wait_for(writer.drain(), 10)
    except (ConnectionError, TimeoutError):
        pass  # the server closed on us: refused
    try:
        answer = await asyncio.wait_for(reader.read(4096), 10)
    except (ConnectionError, TimeoutError):
        answer = b""
    writer.close()
    return sent, answer


async def test_serve_refuses_40_mb_of_headers(app: FastAPI) -> None:
    async with serve(app, **HTTP_LIMITS) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as http:
            assert (await http.get("/healthz")).status_code == 200
            normal = await http.get("/healthz", headers={"X-Filler": "a" * 8000})
            assert normal.status_code == 200
        sent, answer = await _send_huge_headers(base_url, 40 * 1024 * 1024)
    assert not answer.startswith(b"HTTP/1.1 2")
    # Either the 400 arrived, or the server stopped reading long before 40 MB.
    assert answer.startswith(b"HTTP/1.1 4") or sent < 40 * 1024 * 1024, (sent, answer[:100])
    assert MAX_HEADER_BYTES < 40 * 1024 * 1024
