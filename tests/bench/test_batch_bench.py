"""A 200-image product batch from a local origin: images per second with 1, 4 and 8 concurrent
fetches, and the peak RSS of the process (API, worker and origin share it here).

The reference in the same run is the bare per-image work (fetch through the SSRF guard,
validate, compress) done serially without the database, queue or storage, measured right before
and right after each batch run (their mean is that run's reference), so the ratio shows what
rows, events and storage cost under the same load. Run with `make bench`.
"""

from __future__ import annotations

import asyncio
import resource
import time

import httpx
from redis.asyncio import Redis

from backend.batches.fetch import fetch_image
from backend.batches.service import fetch_policy
from backend.composition import AppResources
from backend.config import Settings
from backend.core.db import Database
from backend.images.compress import to_jpeg
from backend.images.validation import inspect
from backend.main import create_app
from backend.tasks.worker import build_worker
from tests.batches.test_router import Origin, product_csv
from tests.live import serve
from tests.realtime.test_ws import register

IMAGES = 200
PER_ROW = 4


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_batch(base: str, origin: Origin, headers: dict[str, str]) -> float:
    rows = [
        (
            str(r + 1),
            f"Product {r}",
            [f"{origin.base}/img/{r * PER_ROW + i}.jpg" for i in range(PER_ROW)],
        )
        for r in range(IMAGES // PER_ROW)
    ]
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=headers) as c:
        started = time.perf_counter()
        created = await c.post(
            "/api/batches", files={"file": ("p.csv", product_csv(rows), "text/csv")}
        )
        assert created.status_code == 202, created.text
        batch_id = created.json()["batch"]["id"]
        while True:
            batch = (await c.get(f"/api/batches/{batch_id}")).json()
            if batch["status"] in ("succeeded", "partial", "failed", "canceled"):
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    assert batch["status"] == "succeeded"
    assert (batch["processed_images"], batch["failed_images"]) == (IMAGES, 0)
    return elapsed


async def test_batch_throughput(
    settings: Settings, committed_database: Database, redis: Redis
) -> None:
    origin = Origin()
    lines: list[str] = []
    async with serve(origin.app()) as origin_base:  # type: ignore[arg-type]
        origin.base = origin_base
        app_settings = settings.model_copy(
            update={"env": "dev", "fetch_allow_loopback_hosts": ["127.0.0.1"]}
        )
        policy = fetch_policy(app_settings)

        async def bare_loop() -> float:
            """Images per second of the bare per-image work, measured next to each batch run
            so that both see the same load on a shared machine."""
            started = time.perf_counter()
            for n in range(IMAGES // 4):
                data = (await fetch_image(f"{origin_base}/img/{n}.jpg", policy)).data
                inspect(
                    data,
                    declared_type="image/jpeg",
                    max_bytes=policy.max_bytes,
                    max_pixels=50_000_000,
                )
                to_jpeg(data, quality=50)
            return (IMAGES // 4) / (time.perf_counter() - started)

        for concurrency in (1, 4, 8):
            before = await bare_loop()
            run_settings = app_settings.model_copy(update={"batch_concurrency": concurrency})
            resources = AppResources(run_settings, db=committed_database, redis=redis)
            app = create_app(run_settings, resources=resources)
            worker = build_worker(resources, handle_signals=False)
            runner = asyncio.create_task(worker.start())
            try:
                async with serve(app) as base:
                    user = await register(base, f"bench{concurrency}")
                    elapsed = await run_batch(
                        base, origin, {"Cookie": user.cookie_header, **user.csrf}
                    )
            finally:
                await worker.stop()
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
            rate = IMAGES / elapsed
            reference = (before + await bare_loop()) / 2
            ratio = rate / reference
            lines.append(
                f"| 200-image batch, concurrency {concurrency} | {rate:.1f} images/s "
                f"({ratio:.2f}× the bare fetch+validate+compress loop, {reference:.1f}/s); "
                f"peak RSS {peak_rss_mb():.0f} MB |"
            )
            bench = f"BENCH batch concurrency={concurrency} images_per_s={rate:.1f}"
            print(f"\n{bench} ref_per_s={reference:.1f}")  # noqa: T201 - benchmark output
    print("\n" + "\n".join(lines))  # noqa: T201 - the README rows
