"""What a batch leaves for each image it imports, now that it decodes each image once and
makes its thumbnails itself: the same objects, states and task record as an upload followed by
its thumbnails task; and a batch whose attempt dies mid-way resumes without duplicates.

Real stack: Postgres or SQLite, Redis, storage, the app on a loopback port and the local origin.
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image as PILImage
from sqlalchemy import func, select

from backend.batches.models import Batch, BatchItem, ItemStatus
from backend.batches.tasks import output_key, run_batch
from backend.config import Settings
from backend.core.migrations import upgrade
from backend.core.resources import Resources
from backend.images.models import Blob, Image
from backend.images.tasks import thumbnail_key
from backend.images.thumbnails import SIZES, render_thumbnails
from backend.main import create_app
from backend.tasks.models import Task
from backend.tasks.registry import TaskContext
from backend.tasks.worker import running_worker
from tests.batches.origin import Origin
from tests.batches.test_router import product_csv
from tests.conftest import TEST_SECRET, AppFactory
from tests.live import serve
from tests.photos import PHOTO, PORTRAIT
from tests.realtime.test_ws import register

SETTINGS: dict[str, Any] = {
    "env": "dev",
    "fetch_allow_loopback_hosts": ["127.0.0.1"],
    "batch_concurrency": 2,
}


@dataclass
class Shop:
    app: FastAPI
    client: httpx.AsyncClient
    origin: Origin

    @property
    def resources(self) -> Resources:
        resources: Resources = self.app.state.resources
        return resources

    async def submit(self, rows: list[tuple[str, str, list[str]]]) -> dict[str, Any]:
        created = await self.client.post(
            "/api/batches", files={"file": ("shop.csv", product_csv(rows), "text/csv")}
        )
        assert created.status_code == 202, created.text
        answer: dict[str, Any] = created.json()
        return answer


@pytest.fixture(params=["postgres", "sqlite"])
def database(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _opened(
    make_live_app: AppFactory, tmp_path: Path, database: str, *, worker: bool
) -> AsyncIterator[Shop]:
    async with AsyncExitStack() as stack:
        origin = stack.enter_context(Origin())
        if database == "postgres":
            app = make_live_app(**SETTINGS)
            if worker:
                await stack.enter_async_context(running_worker(app.state.resources))
        else:
            # Embedded: SQLite, in-process Redis, the worker (if any) inside the served app.
            settings = Settings(
                secret_key=TEST_SECRET,
                database_url=f"sqlite+aiosqlite:///{tmp_path / 'var' / 'atelier.db'}",
                redis_url=None,
                storage_url=f"file://{tmp_path / 'var' / 'storage'}",
                embedded_worker=worker,
                **SETTINGS,
            )
            await asyncio.to_thread(upgrade, settings.database_url)
            app = create_app(settings)
            stack.push_async_callback(app.state.resources.close)
        base = await stack.enter_async_context(serve(app))
        user = await register(base, "shop")
        headers = {"Cookie": user.cookie_header, **user.csrf}
        c = await stack.enter_async_context(
            httpx.AsyncClient(base_url=base, timeout=30, headers=headers)
        )
        yield Shop(app, c, origin)


@pytest.fixture
async def shop(make_live_app: AppFactory, tmp_path: Path, database: str) -> AsyncIterator[Shop]:
    async for opened in _opened(make_live_app, tmp_path, database, worker=True):
        yield opened


@pytest.fixture
async def idle_shop(
    make_live_app: AppFactory, tmp_path: Path, database: str
) -> AsyncIterator[Shop]:
    """No worker: the test runs the batch task itself."""
    async for opened in _opened(make_live_app, tmp_path, database, worker=False):
        yield opened


async def _finished(shop: Shop, batch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        batch: dict[str, Any] = (await shop.client.get(f"/api/batches/{batch_id}")).json()
        if batch["status"] in ("succeeded", "partial", "failed", "canceled"):
            return batch
        assert time.monotonic() < deadline, batch
        await asyncio.sleep(0.05)


def _pixels(data: bytes) -> np.ndarray[Any, Any]:
    return np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


async def test_imported_images_are_ready_with_the_thumbnails_the_task_would_make(
    shop: Shop,
) -> None:
    portrait, photo = PORTRAIT.read_bytes(), PHOTO.read_bytes()
    shop.origin.files = {
        "/portrait.jpg": (portrait, "image/jpeg"),
        "/photo.jpg": (photo, "image/jpeg"),
    }
    o = shop.origin
    # The portrait twice (two products, one picture): one blob, one thumbnails task, two images.
    created = await shop.submit(
        [
            ("1", "Poster", [o.url("/portrait.jpg"), o.url("/photo.jpg")]),
            ("2", "Same poster, framed", [o.url("/portrait.jpg")]),
        ]
    )
    batch = await _finished(shop, created["batch"]["id"])
    assert (batch["status"], batch["processed_images"]) == ("succeeded", 3)
    items = (await shop.client.get(f"/api/batches/{batch['id']}/items")).json()["items"]
    storage = shop.resources.storage
    image_ids = [item["image_id"] for item in items]
    assert len(set(image_ids)) == 3
    for item in items:
        image = (await shop.client.get(f"/api/images/{item['image_id']}")).json()
        assert image["status"] == "ready", image
        assert image["processed_at"] is not None
        assert image["thumbnails"] == {
            "small": f"/api/images/{image['id']}/thumbnails/small",
            "medium": f"/api/images/{image['id']}/thumbnails/medium",
        }
        original = portrait if item["url"].endswith("/portrait.jpg") else photo
        expected = render_thumbnails(original, SIZES)
        for size in SIZES:
            served = await shop.client.get(image["thumbnails"][size])
            assert served.status_code == 200
            if original is portrait:
                # Decoded at the same size as the task decodes it: the very same bytes.
                assert served.content == expected[size]
            else:
                # Shrunk from the full-size decode rather than libjpeg's scaled one: the same
                # size and, to the eye, the same picture.
                got, want = _pixels(served.content), _pixels(expected[size])
                assert got.shape == want.shape
                assert float(np.abs(got - want).mean()) < 3.0
    async with shop.resources.db.sessionmaker() as session:
        blobs = list(await session.scalars(select(Blob)))
        assert len(blobs) == 2
        for blob in blobs:
            assert blob.thumbnails == {size: thumbnail_key(blob, size) for size in SIZES}
            for key in [blob.storage_key, *blob.thumbnails.values()]:
                assert await storage.get(key)
    tasks = (await shop.client.get("/api/tasks?limit=100")).json()["items"]
    thumbnails = [t for t in tasks if t["kind"] == "thumbnails"]
    assert len(thumbnails) == 2
    for task in thumbnails:
        assert (task["status"], task["progress"], task["attempts"]) == ("succeeded", 100, 1)
        assert task["result"]["thumbnails"] == ["medium", "small"]
        assert task["image_id"] in task["result"]["images"]
    # The second portrait image either shared the first one's commit (and is named by its
    # task) or came later and found the blob ready, as a second upload of it would.
    named = [i for t in thumbnails for i in t["result"]["images"]]
    assert len(named) in (2, 3)
    assert set(named) <= set(image_ids)

    # Imported again: the blob and its thumbnails are shared, no new task, as for an upload.
    again = await shop.submit([("1", "Poster", [o.url("/portrait.jpg")])])
    assert (await _finished(shop, again["batch"]["id"]))["status"] == "succeeded"
    tasks = (await shop.client.get("/api/tasks?limit=100")).json()["items"]
    assert len([t for t in tasks if t["kind"] == "thumbnails"]) == 2


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` × ``height`` pixels (a decompression bomb's
    header: refused before any pixel is decoded)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


async def test_bytes_an_upload_would_refuse_fail_their_item_and_are_recorded(shop: Shop) -> None:
    photo = PHOTO.read_bytes()
    o = shop.origin
    o.files = {
        "/truncated.jpg": (photo[: len(photo) // 2], "image/jpeg"),
        "/bomb.png": (_png_claiming(30_000, 30_000), "image/png"),
        "/good.jpg": (PORTRAIT.read_bytes(), "image/jpeg"),
    }
    created = await shop.submit(
        [("1", "Lamp", [o.url("/truncated.jpg"), o.url("/bomb.png"), o.url("/good.jpg")])]
    )
    batch = await _finished(shop, created["batch"]["id"])
    assert (batch["status"], batch["processed_images"], batch["failed_images"]) == (
        "partial",
        1,
        2,
    )
    items = (await shop.client.get(f"/api/batches/{batch['id']}/items")).json()["items"]
    codes = {item["url"].rsplit("/", 1)[-1]: item["error_code"] for item in items}
    assert codes == {
        "truncated.jpg": "upload.corrupt",
        "bomb.png": "upload.too_many_pixels",
        "good.jpg": None,
    }
    # Refused like uploads: failed images with the same codes, and nothing of theirs stored.
    failed = (await shop.client.get("/api/images?status=failed")).json()["items"]
    assert sorted(i["error_code"] for i in failed) == ["upload.corrupt", "upload.too_many_pixels"]
    async with shop.resources.db.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Blob)) == 1


class WorkerDied(Exception):
    """Stands for a worker killed at a progress checkpoint: nothing after it runs."""


async def test_a_batch_whose_attempt_dies_mid_way_resumes_without_duplicates(
    idle_shop: Shop,
) -> None:
    shop = idle_shop
    o = shop.origin
    urls = []
    for n in range(8):
        out = io.BytesIO()
        PILImage.new("RGB", (64, 48), (n * 25, 90, 200 - n * 15)).save(out, "JPEG")
        o.files[f"/p{n}.jpg"] = (out.getvalue(), "image/jpeg")
        urls.append(o.url(f"/p{n}.jpg"))
    # Last, two slow ones (the same bytes): still arriving when the attempt dies.
    urls += [o.url(f"/slow.jpg?interval=0.004&n={n}") for n in range(2)]
    created = await shop.submit([(str(n + 1), f"P{n}", [url]) for n, url in enumerate(urls)])
    batch_id = uuid.UUID(created["batch"]["id"])
    async with shop.resources.db.sessionmaker() as session:
        batch = await session.get(Batch, batch_id)
        assert batch is not None
    calls = 0

    async def dies_at_second_checkpoint(_pct: int, _message: str | None = None) -> None:
        # The first is at the start; the second once some images are committed.
        nonlocal calls
        calls += 1
        if calls == 2:
            raise WorkerDied()

    async def quiet(_pct: int, _message: str | None = None) -> None:
        return None

    def context(progress: Any, attempt: int) -> TaskContext:
        return TaskContext(
            task_id=uuid.UUID(created["task"]["id"]),
            user_id=batch.user_id,
            kind="batch",
            payload={"batch_id": str(batch_id)},
            attempt=attempt,
            progress=progress,
            resources=shop.resources,
        )

    with pytest.raises(BaseExceptionGroup) as died:
        await run_batch(context(dies_at_second_checkpoint, 1))
    assert died.group_contains(WorkerDied)

    storage = shop.resources.storage
    async with shop.resources.db.sessionmaker() as session:
        items = list(await session.scalars(select(BatchItem).where(BatchItem.batch_id == batch_id)))
        done = [i for i in items if i.status == ItemStatus.succeeded]
        left = [i for i in items if i.status == ItemStatus.pending]
        # The attempt must die with work both committed and not.
        assert done
        assert left
        assert len(done) + len(left) == len(items)
        # Committed together: an item reads succeeded only with its image and its output.
        for item in done:
            assert item.image_id is not None
            assert item.output_key
            assert await session.get(Image, item.image_id) is not None
            assert await storage.get(item.output_key)
        assert all(i.image_id is None and i.output_key is None for i in left)
        images_before = await session.scalar(select(func.count()).select_from(Image))
        assert images_before == len(done)

    result = await run_batch(context(quiet, 2))
    assert result is not None
    assert (result["processed_images"], result["failed_images"]) == (10, 0)
    async with shop.resources.db.sessionmaker() as session:
        items = list(await session.scalars(select(BatchItem).where(BatchItem.batch_id == batch_id)))
        assert all(i.status == ItemStatus.succeeded for i in items)
        # Each URL imported exactly once, the first attempt's images kept as they were.
        assert len({i.image_id for i in items}) == 10
        assert await session.scalar(select(func.count()).select_from(Image)) == 10
        # The two slow URLs are the same picture: one blob, one thumbnails task.
        assert await session.scalar(select(func.count()).select_from(Blob)) == 9
        thumbnails = await session.scalar(
            select(func.count()).select_from(Task).where(Task.kind == "thumbnails")
        )
        assert thumbnails == 9
        for item in items:
            assert item.output_key == output_key(batch, item)
            assert await storage.get(item.output_key)
