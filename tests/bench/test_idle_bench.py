"""Embedded mode (`make run`) idles near zero CPU and still picks up work at once.

fakeredis answers a blocking BLMOVE at once, so saq's dequeue loops used to spin a whole core.
Same-run references: the same server with its worker on a real Redis (which blocks), and, for
latency, the old spinning dequeue on fakeredis rebuilt here.
Run with ``.venv/bin/pytest tests/bench/test_idle_bench.py -q -s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from backend.composition import AppResources
from backend.config import Settings
from backend.core.migrations import upgrade
from backend.core.redis import create_redis
from backend.main import create_app
from backend.tasks.deps import QUEUE
from backend.tasks.queue import TaskQueue
from tests.bench.conftest import BenchReport
from tests.bench.test_task_engine_bench import process_cpu_seconds
from tests.conftest import PASSWORD, TEST_SECRET, client_for, unique_email
from tests.photos import PORTRAIT
from tests.servers import Server, free_port

ATELIER = str(Path(sys.executable).with_name("atelier"))
IDLE_SECONDS = 10.0
SETTLE_SECONDS = 3.0
RUNS = 15


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    for name in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL", "PORT"):
        env.pop(name, None)
    env.update({"ATELIER_ENV": "dev", **extra})
    return env


@contextlib.contextmanager
def _server(workdir: Path, **extra: str) -> Iterator[int]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ATELIER, "serve", "--migrate"],
            cwd=workdir,
            env=_env(PORT=str(port), **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _idle_share(pid: int) -> float:
    """CPU seconds per wall second over IDLE_SECONDS of no requests, from /proc/PID/stat."""
    time.sleep(SETTLE_SECONDS)
    cpu, wall = process_cpu_seconds(pid), time.monotonic()
    time.sleep(IDLE_SECONDS)
    return (process_cpu_seconds(pid) - cpu) / (time.monotonic() - wall)


def test_embedded_server_idles_near_zero_cpu(
    tmp_path: Path, redis_server: Server, bench: BenchReport
) -> None:
    with _server(tmp_path / "embedded") as pid:
        embedded = _idle_share(pid)
    # Reference: the same process with its worker inside, on a Redis whose BLMOVE blocks.
    real_redis = redis_server.url.rsplit("/", 1)[0] + "/9"
    with _server(tmp_path / "real", REDIS_URL=real_redis, ATELIER_EMBEDDED_WORKER="true") as pid:
        reference = _idle_share(pid)
    bench.line(
        f"BENCH idle_cpu embedded={embedded * 100:.1f}% of a core "
        f"real_redis_reference={reference * 100:.1f}% over {IDLE_SECONDS:g} s"
    )
    bench.row(
        "embedded server idle (`make run`, no requests)",
        f"{embedded * 100:.1f} % of a core (worker on a real Redis: {reference * 100:.1f} %)",
    )
    assert embedded < 0.05


@contextlib.asynccontextmanager
async def _app(tmp_path: Path, name: str, redis_url: str | None) -> AsyncIterator[AppResources]:
    settings = Settings(
        env="test",
        secret_key=TEST_SECRET,
        database_url=f"sqlite+aiosqlite:///{tmp_path / name / 'atelier.db'}",
        storage_url=f"file://{tmp_path / name / 'storage'}",
        public_base_url="https://testserver",
        redis_url=redis_url,
        embedded_worker=True,
    )
    await asyncio.to_thread(upgrade, settings.database_url)
    resources = AppResources(settings)
    yield resources
    await resources.close()


async def _confirm_to_ready(resources: AppResources) -> tuple[list[float], float]:
    """Confirm→ready latencies of small uploads, and the process CPU share while idle."""
    app = create_app(resources.settings, resources=resources)
    data = PORTRAIT.read_bytes()
    latencies: list[float] = []
    async with app.router.lifespan_context(app), client_for(app) as c:
        registered = await c.post(
            "/api/auth/register", json={"email": unique_email("idle"), "password": PASSWORD}
        )
        assert registered.status_code == 201
        csrf = {"X-CSRF-Token": c.cookies.get("csrf_token") or ""}
        await asyncio.sleep(1.0)
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.sleep(3.0)
        idle = (time.process_time() - cpu) / (time.monotonic() - wall)
        for run in range(RUNS):
            # Distinct bytes per run: no deduplication shortcut.
            body = data + run.to_bytes(4, "big")
            signed = (
                await c.post(
                    "/api/upload/presigned-url",
                    json={
                        "filename": "p.jpg",
                        "content_type": "image/jpeg",
                        "size_bytes": len(body),
                    },
                    headers=csrf,
                )
            ).json()
            posted = await c.post(
                signed["url"], data=signed["fields"], files={"file": ("p.jpg", body, "image/jpeg")}
            )
            assert posted.status_code == 204, posted.text
            # Let the workers settle back into their idle wait, as between real uploads.
            await asyncio.sleep(0.3)
            started = time.perf_counter()
            confirmed = await c.post(
                "/api/upload/confirm", json={"upload_id": signed["upload_id"]}, headers=csrf
            )
            assert confirmed.status_code == 201, confirmed.text
            image_id = confirmed.json()["id"]
            while (await c.get(f"/api/images/{image_id}")).json()["status"] == "processing":
                await asyncio.sleep(0.005)
            latencies.append(time.perf_counter() - started)
    return latencies, idle


def _summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return f"median {statistics.median(ms):.0f} ms (p10–p90 {ms[1]:.0f}–{ms[-2]:.0f})"


async def test_embedded_confirm_to_ready_latency(
    tmp_path: Path, redis_server: Server, bench: BenchReport
) -> None:
    async with _app(tmp_path, "embedded", None) as resources:
        embedded, embedded_idle = await _confirm_to_ready(resources)
    async with _app(tmp_path, "spinning", None) as resources:
        # The old embedded queue: saq's own dequeue on fakeredis, which never blocks.
        spinning_queue = TaskQueue(resources.redis)
        spinning_queue.saq._version = (7, 4, 0)
        resources.provide(QUEUE, lambda: spinning_queue)
        spinning, spinning_idle = await _confirm_to_ready(resources)
    real_url = redis_server.url.rsplit("/", 1)[0] + "/10"
    flush = create_redis(real_url)
    await flush.flushdb()
    await flush.aclose()
    async with _app(tmp_path, "real", real_url) as resources:
        real, real_idle = await _confirm_to_ready(resources)
    bench.line(
        f"BENCH confirm_to_ready portrait embedded: {_summary(embedded)}, "
        f"idle {embedded_idle * 100:.1f}% | old spinning fakeredis: {_summary(spinning)}, "
        f"idle {spinning_idle * 100:.1f}% | real Redis: {_summary(real)}, "
        f"idle {real_idle * 100:.1f}%"
    )
    bench.row(
        "confirm → ready, 512² portrait, embedded (`make run`)",
        f"{_summary(embedded)}; old spinning queue {_summary(spinning)}; "
        f"real Redis {_summary(real)}",
    )
    assert len(embedded) == len(spinning) == len(real) == RUNS
    assert embedded_idle < 0.05
