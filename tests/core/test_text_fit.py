"""Text Postgres cannot store (NUL, lone surrogates) is refused with 422 on every string field,
by one app-wide check, never a 500 from the driver. On the real Postgres."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.auth.test_router import assert_problem
from tests.conftest import PASSWORD, SignedIn, unique_email

NUL = "\x00"


def refused(answer: httpx.Response, *loc: str | int) -> None:
    body = assert_problem(answer, 422, "request.validation")
    errors = body["errors"]
    assert isinstance(errors, list)
    assert [*loc] in [err["loc"] for err in errors], errors


async def test_nul_in_login_email(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/api/auth/login", json={"email": f"a{NUL}@example.com", "password": PASSWORD}
    )
    refused(answer, "body", "email")
    # The same request without the NUL is judged on its content.
    fine = await client.post(
        "/api/auth/login", json={"email": "a@example.com", "password": PASSWORD}
    )
    assert_problem(fine, 401, "auth.invalid_credentials")


async def test_nul_in_register_display_name(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/api/auth/register",
        json={"email": unique_email(), "password": PASSWORD, "display_name": f"Al{NUL}ice"},
    )
    refused(answer, "body", "display_name")


async def test_lone_surrogate_in_raw_json(client: httpx.AsyncClient) -> None:
    raw = b'{"email": "x@example.com", "password": "correct horse \\ud800 battery"}'
    answer = await client.post(
        "/api/auth/login", content=raw, headers={"Content-Type": "application/json"}
    )
    refused(answer, "body", "password")
    # An escaped backslash followed by "u0000" is six ordinary characters, not a NUL.
    literal = b'{"email": "x\\\\u0000@example.com", "password": "correct horse battery"}'
    answer = await client.post(
        "/api/auth/login", content=literal, headers={"Content-Type": "application/json"}
    )
    assert_problem(answer, 401, "auth.invalid_credentials")


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/api/auth/api-keys", {"name": f"ci{NUL}"}, ("body", "name")),
        (
            "/api/upload/presigned-url",
            {"filename": f"a{NUL}.jpg", "content_type": "image/jpeg", "size_bytes": 10},
            ("body", "filename"),
        ),
        (
            "/api/ai/edit",
            {"image_id": str(uuid.uuid4()), "prompt": f"brighter{NUL}"},
            ("body", "prompt"),
        ),
        (
            "/api/sketch/create",
            {"image_id": str(uuid.uuid4()), "style": "pencil", "params": {f"k{NUL}": 1}},
            ("body", "params", f"k{NUL}"),
        ),
    ],
)
async def test_nul_in_signed_in_json_bodies(
    alice: SignedIn, path: str, body: dict[str, object], loc: tuple[str, ...]
) -> None:
    answer = await alice.client.post(path, json=body, headers=alice.csrf)
    refused(answer, *loc)


async def test_nul_in_query_and_form_fields(alice: SignedIn) -> None:
    listed = await alice.client.get("/api/images", params={"cursor": f"x{NUL}"})
    refused(listed, "query", "cursor")
    batch = await alice.client.post(
        "/api/batches",
        files={"file": ("p.csv", b"S. No.,Product Name,Input Image Urls\n", "text/csv")},
        data={"webhook_url": f"https://example.com/{NUL}"},
        headers=alice.csrf,
    )
    refused(batch, "body", "webhook_url")
