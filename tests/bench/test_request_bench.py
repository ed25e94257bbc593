"""Request cost: authenticated ``GET /api/images`` and ``GET /api/auth/me`` against a bare endpoint.

Both servers run as processes of their own on the uvicorn configuration of ``atelier serve``
(``tests/bench/fanout_server.py``): the real application on Postgres and Redis, signed in by
cookie, listing a page of 20 ready images; and a bare FastAPI app whose ``GET /api/bare`` has no
dependency and answers a small JSON object. A load process (``tests/bench/http_load.py``) keeps
``CONNECTIONS`` keep-alive connections busy for ``SECONDS`` per measurement; the three
endpoints are measured in turn, ``REPEATS`` times. Reported: requests per second and the server
process's CPU per request (Linux ``/proc``), medians over the repeats with their range, and each
ratio to the bare endpoint measured next to it. On a shared 2-core machine compare the ratios:
CPU per request is the steadier one, since the load process shares the cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from redis.asyncio import Redis

from backend.config import Settings
from backend.core.db import Database, commit, utcnow
from backend.images.models import Blob, Image, ImageStatus
from tests.bench.conftest import BenchReport
from tests.bench.test_fanout_bench import FanoutServer, Proc, start_server
from tests.bench.test_task_engine_bench import percentile, register_cookie
from tests.tasks.conftest import ROOT

SECONDS = float(os.environ.get("BENCH_REQUEST_SECONDS", "5"))
REPEATS = int(os.environ.get("BENCH_REQUEST_REPEATS", "3"))
# Set to 1 to write each server's cProfile stats into the test's tmp_path (slows them down).
PROFILE = os.environ.get("BENCH_REQUEST_PROFILE") == "1"
CONNECTIONS = 8
PAGE = 20
LOAD_TIMEOUT = SECONDS + 60


@dataclass
class Measure:
    what: str
    requests: int
    per_second: float
    cpu_us_per_request: float
    p50_ms: float


async def load(server: FanoutServer, path: str, cookie: str | None, out: Path) -> Measure:
    headers = ["--header", f"Cookie: {cookie}"] if cookie else []
    proc = Proc(
        [
            sys.executable,
            "-m",
            "tests.bench.http_load",
            "--url",
            server.base_url + path,
            "--seconds",
            str(SECONDS),
            "--connections",
            str(CONNECTIONS),
            *headers,
            "--out",
            str(out),
        ],
        {**os.environ, "PYTHONPATH": str(ROOT)},
        out.with_suffix(".log"),
    )
    try:
        cpu_before = server.proc.cpu()
        deadline = time.monotonic() + LOAD_TIMEOUT
        while proc.proc.poll() is None:
            assert time.monotonic() < deadline, "the load process did not finish in time"
            await asyncio.sleep(0.05)
        cpu = server.proc.cpu() - cpu_before
        assert proc.proc.returncode == 0, proc.log_path.read_text()[-3000:]
    finally:
        proc.stop()
    result = json.loads(out.read_text())
    assert result["codes"] == {"200": result["requests"]}, result["codes"]
    requests = result["requests"]
    return Measure(
        path,
        requests,
        requests / result["seconds"],
        cpu / requests * 1e6,
        percentile(result["latencies_ms"], 50),
    )


async def add_images(db: Database, user_id: uuid.UUID, count: int) -> None:
    """``count`` ready images with their stored bytes' rows, as an upload leaves them."""
    async with db.sessionmaker() as session:
        for n in range(count):
            blob = Blob(
                user_id=user_id,
                sha256=f"{n:064x}",
                storage_key=f"originals/{user_id}/{n}.jpg",
                content_type="image/jpeg",
                format="jpeg",
                size_bytes=250_000 + n,
                width=1600,
                height=1200,
                exif={"Make": "Bench", "Model": "One"},
                thumbnails={
                    "small": f"thumbnails/{user_id}/{n}-small.jpg",
                    "medium": f"thumbnails/{user_id}/{n}-medium.jpg",
                },
            )
            session.add(blob)
            await session.flush()
            session.add(
                Image(
                    user_id=user_id,
                    blob_id=blob.id,
                    original_name=f"photo-{n}.jpg",
                    status=ImageStatus.ready,
                    processed_at=utcnow(),
                )
            )
        await commit(session)


def spread(values: list[float], fmt: str = ".0f") -> str:
    ordered = sorted(values)
    return f"{statistics.median(ordered):{fmt}} ({ordered[0]:{fmt}}–{ordered[-1]:{fmt}})"


async def test_request_cost(
    settings: Settings,
    committed_database: Database,
    redis: Redis,  # noqa: ARG001 - flushed before the run
    tmp_path: Path,
    bench: BenchReport,
) -> None:
    redis_url = settings.redis_url or ""
    atelier = await start_server(
        # Production's log level: the request line is part of a request's cost.
        "atelier",
        settings,
        redis_url,
        tmp_path,
        profile=PROFILE,
        log_level="INFO",
    )
    bare: FanoutServer | None = None
    results: list[tuple[Measure, Measure, Measure, Measure]] = []
    try:
        bare = await start_server("bare", settings, redis_url, tmp_path, profile=PROFILE)
        cookie = await register_cookie(atelier.base_url)
        async with httpx.AsyncClient(base_url=atelier.base_url, timeout=10) as client:
            me = await client.get("/api/auth/me", headers={"Cookie": cookie})
            assert me.status_code == 200, me.text
            await add_images(committed_database, uuid.UUID(me.json()["id"]), PAGE)
            page = await client.get("/api/images", headers={"Cookie": cookie})
            assert page.status_code == 200, page.text
            assert len(page.json()["items"]) == PAGE
        for repeat in range(REPEATS):
            reference = await load(bare, "/api/bare", None, tmp_path / f"bare-{repeat}.json")
            images = await load(atelier, "/api/images", cookie, tmp_path / f"list-{repeat}.json")
            me_run = await load(atelier, "/api/auth/me", cookie, tmp_path / f"me-{repeat}.json")
            # Atelier's floor: its middleware and routing, no authentication, no database.
            floor = await load(atelier, "/healthz", None, tmp_path / f"healthz-{repeat}.json")
            results.append((reference, images, me_run, floor))
            for m in (reference, images, me_run, floor):
                bench.line(
                    f"BENCH request run={repeat} path={m.what} requests={m.requests} "
                    f"req_per_s={m.per_second:.0f} cpu_us_per_request={m.cpu_us_per_request:.0f} "
                    f"p50_ms={m.p50_ms:.2f} ratio_vs_bare={m.per_second / reference.per_second:.2f}"
                )
    finally:
        atelier.proc.stop(sig=signal.SIGINT)
        if bare is not None:
            bare.proc.stop(sig=signal.SIGINT)

    bench.line(
        f"  (median of {REPEATS} runs of {SECONDS:.0f} s, {CONNECTIONS} connections; range in "
        "brackets; ratios per run to the bare endpoint measured just before)"
    )
    bench.line("  | endpoint | req/s | ÷ bare req/s | server CPU µs/request | ÷ bare CPU |")
    bench.line("  |---|---:|---:|---:|---:|")
    for index, name in (
        (0, "bare `GET /api/bare`"),
        (1, "`GET /api/images`"),
        (2, "`GET /api/auth/me`"),
        (3, "`GET /healthz` (Atelier, no auth, no DB)"),
    ):
        rates = [r[index].per_second for r in results]
        ratios = [r[index].per_second / r[0].per_second for r in results]
        cpu = [r[index].cpu_us_per_request for r in results]
        cpu_ratios = [r[index].cpu_us_per_request / r[0].cpu_us_per_request for r in results]
        bench.line(
            f"  | {name} | {spread(rates)} | {spread(ratios, '.2f')} | {spread(cpu)} "
            f"| {spread(cpu_ratios, '.1f')} |"
        )
    list_ratio = [r[1].per_second / r[0].per_second for r in results]
    me_ratio = [r[2].per_second / r[0].per_second for r in results]
    bench.row(
        f"authenticated `GET /api/images` (cookie, a page of {PAGE}, Postgres) over HTTP, "
        f"{CONNECTIONS} connections (`test_request_bench.py`)",
        f"{spread([r[1].per_second for r in results])} req/s, "
        f"{spread(list_ratio, '.2f')}× the bare endpoint's req/s (goal ≥ 0.25); server CPU "
        f"{spread([r[1].cpu_us_per_request for r in results])} µs per request vs bare "
        f"{spread([r[0].cpu_us_per_request for r in results])} µs",
    )
    bench.row(
        "authenticated `GET /api/auth/me` (cookie, Postgres) over HTTP",
        f"{spread([r[2].per_second for r in results])} req/s, "
        f"{spread(me_ratio, '.2f')}× the bare endpoint's; server CPU "
        f"{spread([r[2].cpu_us_per_request for r in results])} µs per request",
    )
