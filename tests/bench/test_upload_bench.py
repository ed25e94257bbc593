"""Confirm-to-ready latency of a 12 MP upload, end to end on the local backend.

From the confirm request (the server reads the object back, validates, records, enqueues) to the
image reported ``ready`` (the worker made both thumbnails). The reference in the same run is the
pure thumbnail rendering of the same bytes, so the figure reads as "stack overhead × pixels".
Run with `make bench`.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from redis.asyncio import Redis

from backend.composition import AppResources
from backend.config import Settings
from backend.core.db import Database
from backend.images.thumbnails import render_thumbnails
from backend.main import create_app
from backend.tasks.worker import build_worker
from tests.conftest import PASSWORD, client_for, unique_email
from tests.photos import photo_jpeg

RUNS = 5


async def test_confirm_to_ready_latency_12mp(
    settings: Settings, committed_database: Database, redis: Redis, tmp_path: object
) -> None:
    app_settings = settings.model_copy(
        update={
            "storage_url": f"file://{tmp_path}/objects",
            "public_base_url": "https://testserver",
            "max_upload_bytes": 64 * 1024 * 1024,
        }
    )
    resources = AppResources(app_settings, db=committed_database, redis=redis)
    app = create_app(app_settings, resources=resources)
    worker = build_worker(resources, handle_signals=False)
    runner = asyncio.create_task(worker.start())
    latencies: list[float] = []
    references: list[float] = []
    try:
        async with client_for(app) as c:
            registered = await c.post(
                "/api/auth/register", json={"email": unique_email("bench"), "password": PASSWORD}
            )
            assert registered.status_code == 201
            csrf = {"X-CSRF-Token": c.cookies.get("csrf_token") or ""}
            for run in range(RUNS):
                # The real 12 MP photograph; sizes a hair apart give distinct bytes (no dedup).
                data = photo_jpeg(12.0 + run / 100)
                started = time.perf_counter()
                render_thumbnails(data)
                references.append(time.perf_counter() - started)

                signed = (
                    await c.post(
                        "/api/upload/presigned-url",
                        json={
                            "filename": "p.jpg",
                            "content_type": "image/jpeg",
                            "size_bytes": len(data),
                        },
                        headers=csrf,
                    )
                ).json()
                posted = await c.post(
                    signed["url"],
                    data=signed["fields"],
                    files={"file": ("p.jpg", data, "image/jpeg")},
                )
                assert posted.status_code == 204
                started = time.perf_counter()
                confirmed = await c.post(
                    "/api/upload/confirm", json={"upload_id": signed["upload_id"]}, headers=csrf
                )
                assert confirmed.status_code == 201, confirmed.text
                image_id = confirmed.json()["id"]
                while (await c.get(f"/api/images/{image_id}")).json()["status"] == "processing":
                    await asyncio.sleep(0.005)
                latencies.append(time.perf_counter() - started)
    finally:
        await worker.stop()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    latency = statistics.median(latencies) * 1000
    reference = statistics.median(references) * 1000
    print(  # noqa: T201 - benchmark output
        f"\nBENCH confirm_to_ready mp=12 median_ms={latency:.0f} "
        f"thumbnails_only_ms={reference:.0f} ratio={latency / reference:.1f}\n"
        f"| confirm → ready, 12 MP JPEG (local storage, one worker) | {latency:.0f} ms "
        f"({latency / reference:.1f}× the bare thumbnail rendering, {reference:.0f} ms) |"
    )
    assert len(latencies) == RUNS
