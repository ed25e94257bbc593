"""The sketch list filtered by image (the image page asks for one image's sketches), on
Postgres and on SQLite, with delivery links on finished sketches."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.auth.test_router import assert_problem
from tests.conftest import PASSWORD, client_for, unique_email
from tests.photos import DARK_SCENE, PORTRAIT


@pytest.fixture
def stack(app_on_each_database: FastAPI) -> FastAPI:
    return app_on_each_database


async def register(c: httpx.AsyncClient) -> dict[str, str]:
    answer = await c.post(
        "/api/auth/register", json={"email": unique_email(), "password": PASSWORD}
    )
    assert answer.status_code == 201, answer.text
    return {"X-CSRF-Token": c.cookies["csrf_token"]}


async def upload(c: httpx.AsyncClient, csrf: dict[str, str], path: Path) -> str:
    answer = await c.post(
        "/api/images", files={"file": (path.name, path.read_bytes(), "image/jpeg")}, headers=csrf
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def sketch(c: httpx.AsyncClient, csrf: dict[str, str], image_id: str, style: str) -> str:
    answer = await c.post(
        "/api/sketch/create", json={"image_id": image_id, "style": style}, headers=csrf
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["sketch"]["id"])


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


async def test_the_list_filters_by_image_and_pages_within_it(stack: FastAPI) -> None:
    async with client_for(stack) as alice, client_for(stack) as bob:
        csrf = await register(alice)
        portrait = await upload(alice, csrf, PORTRAIT)
        coffee = await upload(alice, csrf, DARK_SCENE)
        made = [await sketch(alice, csrf, portrait, style) for style in ("pencil", "ink", "oil")]
        other = await sketch(alice, csrf, coffee, "charcoal")

        everything = (await alice.get("/api/sketch/")).json()
        assert set(ids(everything)) == {*made, other}

        first = await alice.get("/api/sketch/", params={"image_id": portrait, "limit": 2})
        assert first.status_code == 200, first.text
        body = first.json()
        assert ids(body) == made[::-1][:2]  # newest first
        assert all(item["image_id"] == portrait for item in body["items"])
        rest = await alice.get(
            "/api/sketch/",
            params={"image_id": portrait, "limit": 2, "cursor": body["next_cursor"]},
        )
        assert ids(rest.json()) == made[:1]
        assert rest.json()["next_cursor"] is None

        coffee_only = (await alice.get("/api/sketch/", params={"image_id": coffee})).json()
        assert ids(coffee_only) == [other]
        # Not finished yet: no delivery links until there is a result.
        assert coffee_only["items"][0]["delivery"] is None

        # Another user's image id, or an unknown one, matches nothing; a malformed one is a 422.
        await register(bob)
        assert (await bob.get("/api/sketch/", params={"image_id": portrait})).json() == {
            "items": [],
            "next_cursor": None,
        }
        unknown = await alice.get("/api/sketch/", params={"image_id": str(uuid.uuid4())})
        assert unknown.json()["items"] == []
        assert_problem(
            await alice.get("/api/sketch/", params={"image_id": "not-a-uuid"}),
            422,
            "request.validation",
        )
