"""Idempotency and dedup behave the same on SQLite (embedded) as on Postgres, under retries
and under concurrency. Postgres runs with real commits here (not the rolled-back savepoint
fixture), so parallel requests use separate connections as in production."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image as PILImage
from sqlalchemy import func, select

from backend.images.models import Blob, Image
from backend.tasks.models import IdempotencyKey
from tests.auth.test_router import assert_problem
from tests.conftest import PASSWORD, client_for, unique_email


@pytest.fixture
def stack(app_on_each_database: FastAPI) -> FastAPI:
    return app_on_each_database


@asynccontextmanager
async def signed_in(app: FastAPI) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    async with client_for(app) as c:
        answer = await c.post(
            "/api/auth/register", json={"email": unique_email(), "password": PASSWORD}
        )
        assert answer.status_code == 201, answer.text
        yield c, {"X-CSRF-Token": c.cookies["csrf_token"]}


def photo_png() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (64, 48), (10, 120, 200)).save(out, "PNG")
    return out.getvalue()


async def test_a_key_retried_after_a_failed_request_answers_normally(stack: FastAPI) -> None:
    async with signed_in(stack) as (c, csrf):
        headers = {**csrf, "Idempotency-Key": "retry-me"}
        body = {"image_id": str(uuid.uuid4()), "style": "pencil"}
        first = await c.post("/api/sketch/create", json=body, headers=headers)
        assert_problem(first, 404, "image.not_found")
        # The failed request left no claim behind: the retry runs again and answers as it did.
        again = await c.post("/api/sketch/create", json=body, headers=headers)
        assert_problem(again, 404, "image.not_found")
        assert "Idempotent-Replayed" not in again.headers
        async with stack.state.resources.db.sessionmaker() as session:
            left = await session.scalar(select(func.count()).select_from(IdempotencyKey))
        assert left == 0

        # And the key still works for a request that succeeds, then replays it.
        made = await c.post(
            "/api/images", files={"file": ("a.png", photo_png(), "image/png")}, headers=csrf
        )
        assert made.status_code == 201, made.text
        body = {"image_id": made.json()["id"], "style": "pencil"}
        created = await c.post("/api/sketch/create", json=body, headers={**headers})
        assert created.status_code == 202, created.text
        replayed = await c.post("/api/sketch/create", json=body, headers={**headers})
        assert replayed.status_code == 202
        assert replayed.headers["Idempotent-Replayed"] == "true"
        assert replayed.json() == created.json()


async def test_parallel_identical_uploads_all_succeed_and_share_one_blob(stack: FastAPI) -> None:
    data = photo_png()
    async with signed_in(stack) as (c, csrf):

        async def upload() -> httpx.Response:
            return await c.post(
                "/api/images", files={"file": ("same.png", data, "image/png")}, headers=csrf
            )

        answers = await asyncio.gather(*(upload() for _ in range(6)))
        assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
        bodies = [a.json() for a in answers]
        assert len({b["id"] for b in bodies}) == 6
        assert len({b["sha256"] for b in bodies}) == 1
        async with stack.state.resources.db.sessionmaker() as session:
            blobs = await session.scalar(select(func.count()).select_from(Blob))
            images = await session.scalar(select(func.count()).select_from(Image))
        assert (blobs, images) == (1, 6)
