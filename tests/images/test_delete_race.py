"""Deleting an image while its thumbnails are being made leaves nothing behind, and the user
never sees a failed task for the image they deleted. Real Postgres, Redis, local storage and an
in-process worker; the delete is timed into the task's steps by pausing them (the work itself is
real)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import select

from backend.composition import AppResources
from backend.config import Settings
from backend.core.db import Database
from backend.images import tasks as image_tasks
from backend.main import create_app
from backend.tasks.models import Task, TaskStatus
from backend.tasks.worker import running_worker
from tests.conftest import PASSWORD, client_for, unique_email
from tests.photos import PORTRAIT


@pytest.fixture
async def stack(
    settings: Settings, committed_database: Database, redis: Redis, tmp_path: Path
) -> AsyncIterator[tuple[FastAPI, AppResources, Path]]:
    objects = tmp_path / "objects"
    app_settings = settings.model_copy(update={"storage_url": f"file://{objects}"})
    resources = AppResources(app_settings, db=committed_database, redis=redis)
    app = create_app(app_settings, resources=resources)
    yield app, resources, objects
    await resources.storage.close()


def stored(root: Path) -> list[str]:
    """The image objects the local storage holds (its own bookkeeping aside)."""
    objects = root / "objects"
    return sorted(
        str(p.relative_to(objects))
        for p in objects.rglob("*")
        if p.is_file() and p.relative_to(objects).parts[0] in ("thumbnails", "originals")
    )


async def _upload(app: FastAPI) -> tuple[httpx.AsyncClient, dict[str, str], str, uuid.UUID]:
    c = client_for(app)
    answer = await c.post(
        "/api/auth/register", json={"email": unique_email(), "password": PASSWORD}
    )
    assert answer.status_code == 201, answer.text
    user_id = uuid.UUID(answer.json()["id"])
    csrf = {"X-CSRF-Token": c.cookies.get("csrf_token") or ""}
    files = {"file": ("portrait.jpg", PORTRAIT.read_bytes(), "image/jpeg")}
    answer = await c.post("/api/images", files=files, headers=csrf)
    assert answer.status_code == 201, answer.text
    return c, csrf, answer.json()["id"], user_id


async def _thumbnail_task(resources: AppResources, user_id: uuid.UUID) -> Task:
    deadline = time.monotonic() + 30
    while True:
        async with resources.db.sessionmaker() as session:
            task = await session.scalar(
                select(Task).where(Task.user_id == user_id, Task.kind == "thumbnails")
            )
        assert task is not None
        if task.status.finished:
            return task
        assert time.monotonic() < deadline, f"thumbnails still {task.status}"
        await asyncio.sleep(0.05)


async def test_delete_while_rendering_leaves_no_thumbnails(
    stack: tuple[FastAPI, AppResources, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, resources, objects = stack
    rendering, release = threading.Event(), threading.Event()
    real_render = image_tasks.render_thumbnails

    def paused_render(*args: Any, **kwargs: Any) -> Any:
        rendering.set()
        release.wait(20)
        return real_render(*args, **kwargs)

    monkeypatch.setattr(image_tasks, "render_thumbnails", paused_render)
    c, csrf, image_id, user_id = await _upload(app)
    assert len(stored(objects)) == 1  # the original: the listing sees what storage holds
    try:
        async with running_worker(resources):
            assert await asyncio.to_thread(rendering.wait, 20)
            # The original was read; the thumbnails are about to be written.
            deleted = await c.delete(f"/api/images/{image_id}", headers=csrf)
            assert deleted.status_code == 204, deleted.text
            release.set()
            task = await _thumbnail_task(resources, user_id)
    finally:
        release.set()
        await c.aclose()
    assert stored(objects) == []
    assert task.status == TaskStatus.canceled, (task.status, task.error_code, task.error)
    assert task.error_code is None


async def test_delete_before_the_original_is_read_cancels_the_task(
    stack: tuple[FastAPI, AppResources, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, resources, objects = stack
    reading, release = asyncio.Event(), asyncio.Event()
    storage = resources.storage
    real_get = storage.get

    async def paused_get(key: str, **kwargs: Any) -> bytes:
        if key.startswith("originals/"):
            reading.set()
            await release.wait()
        return await real_get(key, **kwargs)

    monkeypatch.setattr(storage, "get", paused_get)
    c, csrf, image_id, user_id = await _upload(app)
    try:
        async with running_worker(resources):
            await asyncio.wait_for(reading.wait(), 20)
            deleted = await c.delete(f"/api/images/{image_id}", headers=csrf)
            assert deleted.status_code == 204, deleted.text
            release.set()
            task = await _thumbnail_task(resources, user_id)
    finally:
        await c.aclose()
    assert stored(objects) == []
    # Not a failed "thumbnails.original_missing": the user deleted it on purpose.
    assert task.status == TaskStatus.canceled, (task.status, task.error_code, task.error)
