"""The ``batch`` task: fetch every URL (SSRF-guarded), keep it as an image of the owner, store
a compressed JPEG, then tell the webhook.

Idempotent: finished items are skipped on a rerun and output keys derive from item ids, so a
crash mid-batch resumes where it stopped instead of fetching everything again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import structlog
from sqlalchemy import Table, bindparam, select, update

from backend.auth.models import User
from backend.batches import webhooks
from backend.batches.fetch import FetchError, post_json
from backend.batches.fetch import fetch_image as fetch
from backend.batches.models import (
    Batch,
    BatchItem,
    BatchStatus,
    ItemStatus,
    WebhookDelivery,
    settled_status,
)
from backend.batches.prepare import Undecodable, prepare
from backend.batches.service import (
    fetch_policy,
    item_counts,
    items_of,
    output_url,
    webhook_secret,
)
from backend.core.db import commit, utcnow
from backend.core.pixels import run_pixels
from backend.core.resources import Resources
from backend.images import service as images
from backend.images.validation import ValidationFailure
from backend.tasks.registry import TaskCanceled, TaskContext, TaskError, task

log = structlog.get_logger(__name__)
FETCH_TRIES = 3
OUTPUT_CACHE = "private, max-age=31536000, immutable"
REPORT_SECONDS = 1.0
LOCAL_WIDTH = 4
# Bytes of fetched originals that may wait for their commit (each is stored in the commit's
# transaction): enough for a chunk of product images to share one commit, while one image up
# to the fetch limit still fits alone.
WAITING_BYTES = 32 * 1024 * 1024
# Outcomes committed together at most; what one transaction holds locked and in memory.
COMMIT_MOST = 32
# How long the first outcome waits for others before a commit; small next to the image's own
# time from fetch to commit, and the bytes that wait are bounded by WAITING_BYTES.
LINGER = 0.05


def output_key(batch: Batch, item: BatchItem) -> str:
    return f"batches/{batch.user_id}/{batch.id}/{item.id}.jpg"


async def _fetch_with_retries(url: str, resources: Resources) -> bytes:
    policy = fetch_policy(resources.settings)
    for attempt in range(1, FETCH_TRIES + 1):
        try:
            return (await fetch(url, policy)).data
        except FetchError as exc:
            if not exc.retryable or attempt == FETCH_TRIES:
                raise
            await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


async def _fetch(resources: Resources, item: BatchItem) -> bytes | FetchError:
    """The item's bytes, or why they could not be had."""
    try:
        return await _fetch_with_retries(item.url, resources)
    except FetchError as exc:
        return exc


@dataclass
class Outcome:
    """What became of one item, waiting to be committed with others."""

    item: BatchItem
    status: ItemStatus = ItemStatus.succeeded
    error: str | None = None
    code: str | None = None
    # Refused bytes are recorded as a failed image, as an upload would be (how many bytes).
    refused: tuple[ValidationFailure, int] | None = None
    rendered: images.Rendered | None = None
    output_key: str | None = None
    output_bytes: int | None = None
    image_id: uuid.UUID | None = None


async def _prepare(
    resources: Resources, batch: Batch, item: BatchItem, fetched: bytes | FetchError
) -> Outcome:
    """One fetched URL through validation, compression and thumbnails (one decode, in a
    worker thread) and its compressed output stored; nothing is written to the database."""
    if isinstance(fetched, FetchError):
        return Outcome(item, ItemStatus.failed, str(fetched), fetched.code)
    settings = resources.settings
    try:
        prepared = await run_pixels(
            prepare,
            fetched,
            quality=batch.quality,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
        )
    except ValidationFailure as failure:
        return Outcome(
            item,
            ItemStatus.failed,
            failure.message,
            failure.code,
            refused=(failure, len(fetched)),
        )
    except Undecodable as exc:
        return Outcome(item, ItemStatus.failed, str(exc), "batch.undecodable")
    key = output_key(batch, item)
    # Before the commit: the key derives from the item, so a rerun after a crash overwrites it.
    await resources.storage.put(
        key, prepared.compressed, content_type="image/jpeg", cache_control=OUTPUT_CACHE
    )
    rendered = images.Rendered(
        data=fetched,
        filename=_name_of(item.url),
        content_type=prepared.content_type,
        meta=prepared.meta,
        thumbnails=prepared.thumbnails,
    )
    return Outcome(item, rendered=rendered, output_key=key, output_bytes=len(prepared.compressed))


_ITEMS = cast(Table, BatchItem.__table__)
_SETTLE_ITEM = (
    update(_ITEMS)
    .where(_ITEMS.c.id == bindparam("item_id"))
    .values(
        {
            # Bind names unlike the columns': SQLAlchemy reserves those for its own SET binds.
            name: bindparam(f"v_{name}")
            for name in (
                "status",
                "error",
                "error_code",
                "image_id",
                "output_key",
                "output_bytes",
                "finished_at",
            )
        }
    )
)


async def _record(resources: Resources, user: User, outcomes: list[Outcome]) -> None:
    """Several items' images, rows and outcomes in one transaction: a handful of statements
    for all of them. An item never reads succeeded without its image and output, and a crash
    before the commit leaves every one of them pending, to be redone by the rerun."""
    async with resources.db.sessionmaker() as session:
        refused = [o for o in outcomes if o.refused is not None]
        if refused:
            await images.record_failures(
                session,
                user=user,
                failures=[(_name_of(o.item.url), *o.refused) for o in refused if o.refused],
            )
        made = [o for o in outcomes if o.rendered is not None]
        if made:
            recorded = await images.ingest_rendered(
                session,
                images.Deps.of(resources),
                user=user,
                rendered=[o.rendered for o in made if o.rendered is not None],
                source="batch",
            )
            for outcome, image in zip(made, recorded, strict=True):
                outcome.image_id = image.id
        now = utcnow()
        # A Core executemany: the ORM's bulk update by primary key costs more per row.
        await session.execute(
            _SETTLE_ITEM,
            [
                {
                    "item_id": o.item.id,
                    "v_status": o.status,
                    "v_error": o.error,
                    "v_error_code": o.code,
                    "v_image_id": o.image_id,
                    "v_output_key": o.output_key,
                    "v_output_bytes": o.output_bytes,
                    "v_finished_at": now,
                }
                for o in outcomes
            ],
        )
        await commit(session)


class GroupCommit:
    """Outcomes that arrive while a commit is under way are committed together by the next
    one: at one image at a time this is a commit per image, and the more images finish at once
    the more share each commit. ``record`` returns once its outcome is committed."""

    def __init__(
        self, write: Callable[[list[Outcome]], Awaitable[None]], *, most: int, linger: float
    ) -> None:
        self._write = write
        self._most = most
        self._linger = linger
        self._waiting: list[tuple[Outcome, asyncio.Future[None]]] = []
        self._writing = False

    async def record(self, outcome: Outcome) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((outcome, done))
        if not self._writing:
            # This caller writes until nothing waits, its own outcome first.
            self._writing = True
            try:
                if len(self._waiting) < self._most:
                    # A moment for the images right behind to share this commit: when they
                    # arrive one by one (one fetch at a time), most would otherwise go alone.
                    await asyncio.sleep(self._linger)
                while self._waiting:
                    chunk, self._waiting = self._waiting[: self._most], self._waiting[self._most :]
                    try:
                        await self._write([o for o, _ in chunk])
                    except BaseException as exc:
                        for _, waiter in chunk:
                            if waiter.done():
                                continue
                            if isinstance(exc, Exception) and waiter is not done:
                                waiter.set_exception(exc)
                            else:
                                waiter.cancel()
                        raise
                    for _, waiter in chunk:
                        waiter.set_result(None)
            finally:
                self._writing = False
        await done


class ByteBudget:
    """At most ``limit`` bytes held at once; a single larger holder is let in alone."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._freed = asyncio.Event()

    async def acquire(self, n: int) -> None:
        while self._used and self._used + n > self._limit:
            self._freed.clear()
            await self._freed.wait()
        self._used += n

    def release(self, n: int) -> None:
        self._used -= n
        self._freed.set()


def _name_of(url: str) -> str:
    return (url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "image")[:200]


async def _counts(resources: Resources, batch_id: uuid.UUID) -> tuple[int, int]:
    """(succeeded, failed) items so far."""
    async with resources.db.sessionmaker() as session:
        return (await item_counts(session, [batch_id])).get(batch_id, (0, 0))


async def _notify(
    resources: Resources,
    batch: Batch,
    user: User,
    succeeded: int,
    failed: int,
    *,
    status: BatchStatus,
    finished_at: str,
) -> None:
    if not batch.webhook_url:
        return
    async with resources.db.sessionmaker() as session:
        owner = await session.get(User, user.id)
        assert owner is not None
        secret = await webhook_secret(session, user=owner)
        await commit(session)
    payload: dict[str, Any] = {
        "batch_id": str(batch.id),
        "status": status.value,
        "total_images": batch.total_images,
        "processed_images": succeeded,
        "failed_images": failed,
        "finished_at": finished_at,
    }
    settings = resources.settings
    async with resources.db.sessionmaker() as session:
        # Each URL's outcome, with a delivery URL for each output (no cookies needed).
        payload["items"] = [
            {
                "line": item.line,
                "url": item.url,
                "status": item.status,
                "error_code": item.error_code,
                "output_url": output_url(settings, item, quality=batch.quality)
                if item.status == ItemStatus.succeeded
                else None,
            }
            for item in await items_of(session, batch)
        ]
    send = partial(_send, policy=fetch_policy(settings))
    attempts = await webhooks.deliver(
        batch.webhook_url,
        payload,
        secret=secret,
        send=send,
        attempts=settings.webhook_attempts,
        base_delay=settings.webhook_base_delay_seconds,
    )
    async with resources.db.sessionmaker() as session:
        session.add_all(
            WebhookDelivery(
                batch_id=batch.id,
                attempt=a.number,
                status_code=a.status_code,
                duration_ms=a.duration_ms,
                error=a.error,
                delivered=a.delivered,
            )
            for a in attempts
        )
        await commit(session)


async def _send(url: str, body: bytes, headers: dict[str, str], *, policy: Any) -> int:
    return await post_json(url, body, headers=headers, policy=policy)


@task("batch", timeout=3600, max_attempts=3, retry_delay=5.0)
async def run_batch(ctx: TaskContext) -> dict[str, Any]:
    resources = ctx.resources
    batch_id = uuid.UUID(str(ctx.payload["batch_id"]))
    async with resources.db.sessionmaker() as session:
        batch = await session.get(Batch, batch_id)
        user = await session.get(User, ctx.user_id)
        pending = list(
            await session.scalars(
                select(BatchItem)
                .where(BatchItem.batch_id == batch_id, BatchItem.status == ItemStatus.pending)
                .order_by(BatchItem.line, BatchItem.position)
            )
        )
    if batch is None or user is None:
        raise TaskError("The batch is gone.", code="batch.gone", retry=False)
    total = max(1, batch.total_images)
    done = sum(await _counts(resources, batch_id))
    await ctx.progress(int(done * 95 / total), f"{done} of {batch.total_images} images")
    # The setting bounds the fetches (the load on the shop's servers); the local work on what
    # was fetched runs at least LOCAL_WIDTH wide, so one fetch at a time does not also mean one
    # database round trip at a time. A fetch slot is held until its bytes have a local slot,
    # and a local slot until its image's outputs are made and its bytes fit in WAITING_BYTES,
    # so at most batch_concurrency + LOCAL_WIDTH fetched images and WAITING_BYTES wait.
    fetch_slots = asyncio.Semaphore(resources.settings.batch_concurrency)
    local_slots = asyncio.Semaphore(max(LOCAL_WIDTH, resources.settings.batch_concurrency))
    waiting = ByteBudget(WAITING_BYTES)
    # Progress (a locked row update, a commit and an event) at most every 5 % of the images or
    # every REPORT_SECONDS, not per image: for small images it cost more than the image itself.
    step = max(1, -(-total // 20))
    state = {"finished": done, "reported": done, "at": time.monotonic()}

    async def report() -> None:
        finished = state["finished"]
        state["reported"], state["at"] = finished, time.monotonic()
        # The last 5 % are the webhook's.
        await ctx.progress(int(finished * 95 / total), f"{finished} of {batch.total_images} images")

    recorder = GroupCommit(partial(_record, resources, user), most=COMMIT_MOST, linger=LINGER)

    async def one(item: BatchItem) -> None:
        async with fetch_slots:
            fetched = await _fetch(resources, item)
            await local_slots.acquire()
        try:
            outcome = await _prepare(resources, batch, item, fetched)
            held = len(outcome.rendered.data) if outcome.rendered else 0
            del fetched  # the original's bytes are held by the outcome until its commit
            await waiting.acquire(held)
        finally:
            local_slots.release()
        try:
            await recorder.record(outcome)
        finally:
            waiting.release(held)
        state["finished"] += 1
        due = state["finished"] - state["reported"] >= step
        if due or time.monotonic() - state["at"] >= REPORT_SECONDS:
            # Also where a cancel request is seen.
            await report()

    try:
        async with asyncio.TaskGroup() as group:
            for item in pending:
                group.create_task(one(item))
    except* TaskCanceled:
        # A cancel seen at one item's checkpoint stops them all; the runner expects it bare.
        raise TaskCanceled() from None
    succeeded, failed = await _counts(resources, batch_id)
    # What GET /api/batches/{id} will answer once this task has succeeded; said here too for
    # the webhook and for clients watching the task.
    status = settled_status(succeeded, failed)
    # One instant for the webhook and the batch (which reads it from the result), taken before
    # webhook retries, which can take a while, and the task's own end.
    finished_at = utcnow().isoformat().replace("+00:00", "Z")
    await ctx.progress(96, "notifying the webhook" if batch.webhook_url else "done")
    await _notify(resources, batch, user, succeeded, failed, status=status, finished_at=finished_at)
    return {
        "status": status.value,
        "processed_images": succeeded,
        "failed_images": failed,
        "total_images": batch.total_images,
        "finished_at": finished_at,
    }
