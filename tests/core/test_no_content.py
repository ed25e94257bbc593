"""A 204 carries no body and so names no body type: no ``Content-Type`` at all."""

from __future__ import annotations

import httpx

from tests.ai.test_router import solid, upload
from tests.conftest import SignedIn


def assert_no_content(answer: httpx.Response) -> None:
    assert answer.status_code == 204, answer.text
    assert answer.content == b""
    assert "content-type" not in answer.headers
    assert "x-request-id" in answer.headers  # the middleware still saw it


async def test_204_answers_have_no_content_type(alice: SignedIn) -> None:
    image = await upload(alice.client, solid((3, 4, 5)), alice.csrf)
    assert_no_content(await alice.client.delete(f"/api/images/{image['id']}", headers=alice.csrf))

    created = await alice.client.post("/api/auth/api-keys", json={"name": "ci"}, headers=alice.csrf)
    assert created.status_code == 201, created.text
    assert created.headers["content-type"] == "application/json"  # bodies keep theirs
    assert_no_content(
        await alice.client.delete(f"/api/auth/api-keys/{created.json()['id']}", headers=alice.csrf)
    )

    assert_no_content(await alice.client.post("/api/auth/logout", headers=alice.csrf))
