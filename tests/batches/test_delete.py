"""DELETE /api/batches/{id} on Postgres and on SQLite (embedded): a finished batch goes with its
items and compressed outputs while the images it imported stay; a running one is refused until
it is canceled; someone else's batch answers like a missing one."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image as PILImage
from sqlalchemy import func, select

from backend.batches.models import BatchItem
from backend.config import Settings
from backend.core.migrations import upgrade
from backend.main import create_app
from backend.tasks.worker import running_worker
from tests.auth.test_router import assert_problem
from tests.batches.origin import Origin
from tests.batches.test_router import product_csv
from tests.conftest import TEST_SECRET, AppFactory
from tests.live import serve
from tests.realtime.test_ws import register

ENDED = ("succeeded", "partial", "failed", "canceled")
# A cancel takes effect at the task's next progress step, after the item in flight: a short
# fetch timeout keeps the slow item's tries (and so this test) short.
FAST_FETCH: dict[str, Any] = {
    "fetch_allow_loopback_hosts": ["127.0.0.1"],
    "fetch_total_timeout_seconds": 1.0,
}


@dataclass
class Stack:
    app: FastAPI
    base: str
    origin: Origin

    async def client(self, tag: str) -> httpx.AsyncClient:
        user = await register(self.base, tag)
        return httpx.AsyncClient(
            base_url=self.base, timeout=30, headers={"Cookie": user.cookie_header, **user.csrf}
        )


@pytest.fixture(params=["postgres", "sqlite"])
async def stack(
    request: pytest.FixtureRequest, tmp_path: Path, make_live_app: AppFactory
) -> AsyncIterator[Stack]:
    async with AsyncExitStack() as stack:
        origin = stack.enter_context(Origin())
        if request.param == "postgres":
            app = make_live_app(env="dev", **FAST_FETCH)
            await stack.enter_async_context(running_worker(app.state.resources))
        else:
            # Embedded: SQLite, in-process Redis, the worker inside the served app.
            settings = Settings(
                env="dev",
                secret_key=TEST_SECRET,
                database_url=f"sqlite+aiosqlite:///{tmp_path / 'var' / 'atelier.db'}",
                redis_url=None,
                storage_url=f"file://{tmp_path / 'var' / 'storage'}",
                **FAST_FETCH,
            )
            await asyncio.to_thread(upgrade, settings.database_url)
            app = create_app(settings)
            stack.push_async_callback(app.state.resources.close)
        base = await stack.enter_async_context(serve(app))
        yield Stack(app, base, origin)


async def start(c: httpx.AsyncClient, urls: list[str]) -> dict[str, Any]:
    created = await c.post(
        "/api/batches", files={"file": ("shop.csv", product_csv([("1", "Mug", urls)]), "text/csv")}
    )
    assert created.status_code == 202, created.text
    batch: dict[str, Any] = created.json()["batch"]
    return batch


async def wait_ended(c: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        batch: dict[str, Any] = (await c.get(f"/api/batches/{batch_id}")).json()
        if batch["status"] in ENDED:
            return batch
        assert time.monotonic() < deadline, batch
        await asyncio.sleep(0.1)


async def test_delete_needs_a_session(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base) as anonymous:
        answer = await anonymous.delete(f"/api/batches/{uuid.uuid4()}")
    assert_problem(answer, 401, "auth.unauthenticated")


async def test_delete_removes_batch_items_and_outputs_but_keeps_images(stack: Stack) -> None:
    o = stack.origin
    async with await stack.client("owner") as c, await stack.client("other") as other:
        batch = await start(c, [o.url("/image.jpg"), o.url("/status/404")])
        done = await wait_ended(c, batch["id"])
        assert done["status"] == "partial", done
        items = (await c.get(f"/api/batches/{batch['id']}/items")).json()["items"]
        image_id = next(item["image_id"] for item in items if item["status"] == "succeeded")
        # Each output has a small preview that opens without cookies; a failure has none.
        previews = {item["status"]: item["thumbnail_url"] for item in items}
        assert previews["failed"] is None
        # Signed under PUBLIC_BASE_URL, which this app was not given: the path is what counts.
        path = urlsplit(previews["succeeded"]).path
        async with httpx.AsyncClient(base_url=stack.base, timeout=30) as anonymous:
            preview = await anonymous.get(path, headers={"Accept": "image/webp"})
        assert preview.status_code == 200, preview.text
        assert preview.headers["content-type"] == "image/webp"
        with PILImage.open(io.BytesIO(preview.content)) as shown:
            assert max(shown.size) <= 200
        resources = stack.app.state.resources
        async with resources.db.sessionmaker() as session:
            rows = list(await session.scalars(select(BatchItem)))
        keys = [row.output_key for row in rows if row.output_key]
        assert len(keys) == 1
        assert await resources.storage.head(keys[0]) is not None

        # Someone else's batch answers exactly like one that does not exist.
        assert_problem(await other.delete(f"/api/batches/{batch['id']}"), 404, "batch.not_found")
        assert_problem(await c.delete(f"/api/batches/{uuid.uuid4()}"), 404, "batch.not_found")
        assert (await c.get(f"/api/batches/{batch['id']}")).status_code == 200

        deleted = await c.delete(f"/api/batches/{batch['id']}")
        assert deleted.status_code == 204, deleted.text
        assert deleted.content == b""
        assert "content-type" not in deleted.headers
        assert_problem(await c.get(f"/api/batches/{batch['id']}"), 404, "batch.not_found")
        assert_problem(await c.get(f"/api/batches/{batch['id']}/items"), 404, "batch.not_found")
        assert (await c.get("/api/batches")).json()["items"] == []
        assert_problem(await c.delete(f"/api/batches/{batch['id']}"), 404, "batch.not_found")
        async with resources.db.sessionmaker() as session:
            left = await session.scalar(select(func.count()).select_from(BatchItem))
        assert left == 0
        assert await resources.storage.head(keys[0]) is None
        # The imported image is the user's own and stays, with its file.
        image = await c.get(f"/api/images/{image_id}")
        assert image.status_code == 200, image.text
        assert (await c.get(f"/api/images/{image_id}/download")).status_code in (200, 307)


async def test_a_running_batch_is_refused_until_canceled(stack: Stack) -> None:
    o = stack.origin
    async with await stack.client("runner") as c:
        # One byte every 50 ms: the fetch runs into its timeout, on every try.
        batch = await start(c, [o.url("/slow.jpg?interval=0.05")])
        deadline = time.monotonic() + 30
        while (await c.get(f"/api/batches/{batch['id']}")).json()["status"] == "queued":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert_problem(await c.delete(f"/api/batches/{batch['id']}"), 409, "batch.in_progress")
        assert (await c.get(f"/api/batches/{batch['id']}")).status_code == 200

        canceled = await c.post(f"/api/tasks/{batch['task_id']}/cancel")
        assert canceled.status_code == 202, canceled.text
        assert (await wait_ended(c, batch["id"]))["status"] == "canceled"
        assert (await c.delete(f"/api/batches/{batch['id']}")).status_code == 204
        assert_problem(await c.get(f"/api/batches/{batch['id']}"), 404, "batch.not_found")
