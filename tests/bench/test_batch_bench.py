"""A 200-image product batch from a local origin: images per second with 1, 4 and 8 concurrent
fetches, and the peak RSS of the process (API, worker and origin share it here).

The reference in the same run is the bare per-image work (fetch through the SSRF guard,
validate, compress at the batch's default quality 50, the same 200 images from the same
origin) done serially without the database, queue or storage, measured right before and right
after each batch run (their mean is that run's reference), so the ratio shows what rows, events
and storage cost under the same load. Each concurrency runs ``BATCH_BENCH_ROUNDS`` times
(default 3) and reports the median ratio with its spread.

What the batch does beyond the loop, all counted as done when the batch reads ``succeeded``:
each image is recorded (an image row, its blob, the original stored once per content), its
thumbnails rendered from the pixels decoded for the compression and stored (the image is ready
and its thumbnails task recorded as succeeded, as the task would leave it), its compressed
output stored and its item's outcome written, and progress is reported. Anything the batch
still leaves queued (an image whose blob was being made elsewhere gets a thumbnails task) is
drained before the reference after each run, so neither it nor the next run pays for it.
Also printed: CPU seconds per image of this process during the run and during the loop.

Also printed per image (first round of each concurrency): SQL statements by who issued them
(worker tasks vs the API answering the status polls) and storage calls, counted by listeners
installed here only. ``BATCH_BENCH_PROFILE=FILE`` writes cProfile stats of the concurrency-1
batch run (the whole process: API, worker and origin). Run with `make bench`.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import resource
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine

from backend.batches.fetch import fetch_image
from backend.batches.service import fetch_policy
from backend.composition import AppResources
from backend.config import Settings
from backend.core.db import Database
from backend.images.compress import to_jpeg
from backend.images.validation import inspect
from backend.main import create_app
from backend.storage.base import Storage
from backend.tasks.models import ACTIVE_STATUSES, Task
from backend.tasks.worker import build_worker
from tests.batches.test_router import Origin, product_csv
from tests.live import serve
from tests.realtime.test_ws import register

IMAGES = 200
PER_ROW = 4
ROUNDS = int(os.environ.get("BATCH_BENCH_ROUNDS", "3"))
CONCURRENCIES = [int(n) for n in os.environ.get("BATCH_BENCH_CONCURRENCY", "1,4,8").split(",")]
PROFILE = os.environ.get("BATCH_BENCH_PROFILE")
STORAGE_CALLS = ("put", "get", "head", "delete", "delete_many")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Counters:
    """SQL statements by the coroutine of the asyncio task that issued them, storage calls by
    method; measurement only, nothing is replaced."""

    def __init__(self) -> None:
        self.sql: Counter[str] = Counter()
        self.storage: Counter[str] = Counter()
        self.on = False

    def statement(self, *_: Any) -> None:
        if not self.on:
            return
        task = asyncio.current_task()
        coro = task.get_coro() if task is not None else None
        self.sql[getattr(coro, "__qualname__", "?")] += 1

    def watch(self, storage: Storage) -> None:
        for name in STORAGE_CALLS:
            original: Callable[..., Awaitable[Any]] = getattr(storage, name)

            async def counted(
                *args: Any,
                _name: str = name,
                _fn: Callable[..., Awaitable[Any]] = original,
                **kwargs: Any,
            ) -> Any:
                if self.on:
                    self.storage[_name] += 1
                return await _fn(*args, **kwargs)

            setattr(storage, name, counted)


async def _drain(database: Database, timeout: float = 300) -> None:
    """Wait until no task is queued or running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with database.sessionmaker() as session:
            active = await session.scalar(
                select(func.count()).select_from(Task).where(Task.status.in_(ACTIVE_STATUSES))
            )
        if not active:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("tasks still active after the batch")


async def run_batch(base: str, origin: Origin, headers: dict[str, str]) -> tuple[float, int]:
    """Seconds from upload to ``succeeded``, and how many status polls that took."""
    rows = [
        (
            str(r + 1),
            f"Product {r}",
            [f"{origin.base}/img/{r * PER_ROW + i}.jpg" for i in range(PER_ROW)],
        )
        for r in range(IMAGES // PER_ROW)
    ]
    polls = 0
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=headers) as c:
        started = time.perf_counter()
        created = await c.post(
            "/api/batches", files={"file": ("p.csv", product_csv(rows), "text/csv")}
        )
        assert created.status_code == 202, created.text
        batch_id = created.json()["batch"]["id"]
        while True:
            batch = (await c.get(f"/api/batches/{batch_id}")).json()
            polls += 1
            if batch["status"] in ("succeeded", "partial", "failed", "canceled"):
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    assert batch["status"] == "succeeded"
    assert (batch["processed_images"], batch["failed_images"]) == (IMAGES, 0)
    return elapsed, polls


async def test_batch_throughput(
    settings: Settings, committed_database: Database, redis: Redis
) -> None:
    origin = Origin()
    lines: list[str] = []
    counters = Counters()
    event.listen(Engine, "before_cursor_execute", counters.statement)
    try:
        async with serve(origin.app()) as origin_base:  # type: ignore[arg-type]
            origin.base = origin_base
            await _measure(settings, committed_database, redis, origin, counters, lines)
    finally:
        event.remove(Engine, "before_cursor_execute", counters.statement)
    print("\n" + "\n".join(lines))  # noqa: T201 - the README rows


async def _measure(
    settings: Settings,
    database: Database,
    redis: Redis,
    origin: Origin,
    counters: Counters,
    lines: list[str],
) -> None:
    app_settings = settings.model_copy(
        update={"env": "dev", "fetch_allow_loopback_hosts": ["127.0.0.1"]}
    )
    policy = fetch_policy(app_settings)
    # CPU seconds per image of this process (all threads): on a machine other work keeps
    # busy, what an image costs in CPU decides the rate more than how the work overlaps.
    loop_cpu: list[float] = []

    async def bare_loop() -> float:
        """Images per second of the bare per-image work, measured next to each batch run
        so that both see the same load on a shared machine."""
        cpu = time.process_time()
        started = time.perf_counter()
        for n in range(IMAGES):
            data = (await fetch_image(f"{origin.base}/img/{n}.jpg", policy)).data
            inspect(
                data, declared_type="image/jpeg", max_bytes=policy.max_bytes, max_pixels=50_000_000
            )
            to_jpeg(data, quality=50)
        loop_cpu.append((time.process_time() - cpu) / IMAGES)
        return IMAGES / (time.perf_counter() - started)

    for concurrency in CONCURRENCIES:
        run_settings = app_settings.model_copy(update={"batch_concurrency": concurrency})
        resources = AppResources(run_settings, db=database, redis=redis)
        counters.watch(resources.storage)
        app = create_app(run_settings, resources=resources)
        worker = build_worker(resources, handle_signals=False)
        runner = asyncio.create_task(worker.start())
        rates: list[float] = []
        ratios: list[float] = []
        try:
            async with serve(app) as base:
                for round_ in range(ROUNDS):
                    # A new user each round: a user's second upload of the same bytes shares
                    # the first one's stored original and thumbnails, which would flatter it.
                    user = await register(base, f"bench{concurrency}r{round_}")
                    headers = {"Cookie": user.cookie_header, **user.csrf}
                    before = await bare_loop()
                    first = round_ == 0
                    counters.sql.clear()
                    counters.storage.clear()
                    counters.on = first
                    profiler = (
                        cProfile.Profile() if PROFILE and first and concurrency == 1 else None
                    )
                    if profiler is not None:
                        profiler.enable()
                    cpu = time.process_time()
                    elapsed, polls = await run_batch(base, origin, headers)
                    batch_cpu = (time.process_time() - cpu) / IMAGES
                    if profiler is not None:
                        profiler.disable()
                        profiler.dump_stats(PROFILE or "")
                    counters.on = False
                    rate = IMAGES / elapsed
                    # The thumbnails still queued would slow the reference (and the next run).
                    await _drain(database)
                    reference = (before + await bare_loop()) / 2
                    rates.append(rate)
                    ratios.append(rate / reference)
                    print(  # noqa: T201 - benchmark output
                        f"\nBENCH batch concurrency={concurrency} round={round_} "
                        f"images_per_s={rate:.1f} ref_per_s={reference:.1f} "
                        f"ratio={rate / reference:.3f} cpu_ms_per_image={batch_cpu * 1000:.1f} "
                        f"ref_cpu_ms_per_image={loop_cpu[-1] * 1000:.1f}"
                    )
                    if first:
                        per_image = {k: round(v / IMAGES, 2) for k, v in counters.storage.items()}
                        sql = {k: round(v / IMAGES, 2) for k, v in counters.sql.most_common()}
                        print(  # noqa: T201 - benchmark output
                            f"  per image: SQL by issuing coroutine {sql} ({polls} polls); "
                            f"storage {per_image}"
                        )
        finally:
            await worker.stop()
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        ratio = statistics.median(ratios)
        lines.append(
            f"| 200-image batch, concurrency {concurrency} | median {statistics.median(rates):.1f}"
            f" images/s, {ratio:.2f}× the bare fetch+validate+compress loop (range "
            f"{min(ratios):.2f}–{max(ratios):.2f} over {ROUNDS} runs); peak RSS "
            f"{peak_rss_mb():.0f} MB |"
        )
