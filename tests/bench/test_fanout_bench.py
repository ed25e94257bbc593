"""Fan-out: 1,000 WebSockets (4 users × 250) on one API instance, against a bare fan-out app.

Both servers run as processes of their own on the same uvicorn configuration as ``atelier
serve`` (``tests/bench/fanout_server.py``): the real application (cookie-authenticated ``/ws``,
Postgres, Redis) and a minimal FastAPI app that subscribes to the same Redis channel and sends
each event to its user's sockets. The clients run in two more processes
(``tests/bench/fanout_clients.py``), so parsing a thousand frames per round is not charged to
either server. This process publishes the events exactly as a worker does
(``backend.tasks.events.publish``): each round, one event per user (1,000 frames in all), then
waits until every socket has its frame (closed loop), so each figure is one round's latency.

Runs alternate between the reference and the subject, ``REPEATS`` times each; the figures are
medians over runs with their range. Reported: per-frame latency p50/p99 (publish → receipt), the
server process's CPU per delivered frame (Linux ``/proc``), its full garbage collections during
the rounds, and where each event's time went: publish → the app has it (the servers timestamp
that, and the end of their writes, see ``fanout_server``) → written → last frame parsed by a
client. Both servers run the WebSocket options of ``atelier serve`` (compression off). On a
shared 2-core machine absolute figures move with the load; compare the ratios. Sizes can be
lowered for a quick look with ``BENCH_FANOUT_ROUNDS`` and ``BENCH_FANOUT_REPEATS``;
``BENCH_FANOUT_GC=default`` runs both servers without ``tune_gc``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from backend.config import Settings
from backend.core.db import Database, utcnow
from backend.tasks import events
from backend.tasks.models import Task, TaskStatus
from tests.bench.conftest import BenchReport
from tests.bench.kinds import progress_message
from tests.bench.test_task_engine_bench import percentile, process_cpu_seconds, register_cookie
from tests.bench.ws_clients import raise_open_file_limit
from tests.conftest import TEST_SECRET
from tests.servers import Server, free_port
from tests.tasks.conftest import ROOT

USERS = 4
SOCKETS_PER_USER = 250
ROUNDS = int(os.environ.get("BENCH_FANOUT_ROUNDS", "150"))
WARMUP = 15
REPEATS = int(os.environ.get("BENCH_FANOUT_REPEATS", "3"))
GC_MODE = os.environ.get("BENCH_FANOUT_GC", "tuned")
# Set to 1 to write each server's cProfile stats into the test's tmp_path (slows them down).
PROFILE = os.environ.get("BENCH_FANOUT_PROFILE") == "1"
CLIENT_PROCESSES = 2
OPEN_CONCURRENCY = 50

# Hard bounds: hitting one fails the benchmark rather than hanging it.
SERVER_START_TIMEOUT = 30.0
CLIENTS_READY_TIMEOUT = 180.0
ACK_TIMEOUT = 30.0
RUN_TIMEOUT = 240.0


class Proc:
    """A child process by PID, its output in a log file; stopped by SIGTERM then SIGKILL."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def cpu(self) -> float:
        return process_cpu_seconds(self.proc.pid)

    def stop(self, grace: float = 10.0, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def server_env(settings: Settings, log_level: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    for name in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL"):
        env.pop(name, None)
    env.update(
        {
            "ATELIER_ENV": "test",
            "ATELIER_SECRET_KEY": TEST_SECRET,
            "ATELIER_LOG_LEVEL": log_level,
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url or "",
            "STORAGE_URL": settings.storage_url,
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


@dataclass
class FanoutServer:
    name: str
    proc: Proc
    base_url: str
    stats: Path


async def start_server(
    name: str,
    settings: Settings,
    redis_url: str,
    workdir: Path,
    *,
    profile: bool = PROFILE,
    log_level: str = "WARNING",
) -> FanoutServer:
    port = free_port()
    stats = workdir / f"{name}-stats.json"
    proc = Proc(
        [
            sys.executable,
            "-m",
            "tests.bench.fanout_server",
            name,
            "--port",
            str(port),
            "--stats",
            str(stats),
            "--redis-url",
            redis_url,
            "--gc",
            GC_MODE,
            *(["--profile", str(workdir / f"{name}.prof")] if profile else []),
        ],
        server_env(settings, log_level),
        workdir / f"{name}-server.log",
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            try:
                await client.get(base_url + "/healthz")
                break
            except httpx.TransportError:
                if proc.proc.poll() is not None or time.monotonic() > deadline:
                    proc.stop()
                    raise AssertionError(
                        f"{name} server did not start:\n{proc.log_path.read_text()[-3000:]}"
                    ) from None
                await asyncio.sleep(0.1)
    return FanoutServer(name, proc, base_url, stats)


@dataclass
class RunResult:
    server: str
    latencies_ms: list[float]
    cpu_us_per_frame: float
    window: tuple[float, float]
    seconds: float
    # Each measured event's last receipt on any socket, by its send time (ns).
    last_ns: dict[int, int]

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)


def bench_tasks(user_ids: list[uuid.UUID]) -> list[Task]:
    """One running task per user, never stored: the events are what a worker would publish."""
    now = utcnow()
    return [
        Task(
            id=uuid.uuid4(),
            user_id=user_id,
            kind="bench.fanout",
            status=TaskStatus.running,
            progress=0,
            message=None,
            attempts=1,
            max_attempts=1,
            payload={},
            created_at=now,
            started_at=now,
            updated_at=now,
        )
        for user_id in user_ids
    ]


async def run_once(
    server: FanoutServer,
    targets: list[dict[str, Any]],
    tasks: list[Task],
    redis: Redis,
    redis_url: str,
    workdir: Path,
    label: str,
) -> RunResult:
    """Open every socket, publish ``WARMUP + ROUNDS`` rounds in a closed loop, collect."""
    ack_key = f"bench:fanout:ack:{uuid.uuid4().hex}"
    total = WARMUP + ROUNDS
    clients: list[Proc] = []
    outs: list[Path] = []
    try:
        for n in range(CLIENT_PROCESSES):
            mine = targets[n::CLIENT_PROCESSES]
            target_file = workdir / f"targets-{label}-{n}.json"
            target_file.write_text(json.dumps(mine))
            out = workdir / f"clients-{label}-{n}.json"
            outs.append(out)
            clients.append(
                Proc(
                    [
                        sys.executable,
                        "-m",
                        "tests.bench.fanout_clients",
                        "--targets",
                        str(target_file),
                        "--events",
                        str(total),
                        "--warmup",
                        str(WARMUP),
                        "--redis-url",
                        redis_url,
                        "--ack-key",
                        ack_key,
                        "--out",
                        str(out),
                        "--concurrency",
                        str(OPEN_CONCURRENCY // CLIENT_PROCESSES),
                    ],
                    {**os.environ, "PYTHONPATH": str(ROOT)},
                    workdir / f"clients-{label}-{n}.log",
                )
            )
        deadline = time.monotonic() + CLIENTS_READY_TIMEOUT
        for client in clients:
            while "READY" not in client.log_path.read_text(errors="replace"):
                assert client.proc.poll() is None, client.log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "clients did not open their sockets in time"
                await asyncio.sleep(0.1)

        run_deadline = time.monotonic() + RUN_TIMEOUT
        cpu_before, wall_before, started = server.proc.cpu(), time.time(), time.perf_counter()
        for index in range(total):
            for task in tasks:
                task.message = progress_message(index, time.time_ns())
                task.progress = index * 100 // total
                task.updated_at = utcnow()
                await events.publish(redis, task)
            for _ in clients:
                acked = await redis.blpop([ack_key], timeout=ACK_TIMEOUT)
                assert acked is not None, f"{server.name}: round {index} was not acknowledged"
            assert time.monotonic() < run_deadline, f"{server.name}: run took too long"
        seconds = time.perf_counter() - started
        cpu = server.proc.cpu() - cpu_before
        window = (wall_before, time.time())

        for client in clients:
            for _ in range(int(CLIENTS_READY_TIMEOUT * 10)):
                if client.proc.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            assert client.proc.returncode == 0, client.log_path.read_text()[-3000:]
    finally:
        for client in clients:
            client.stop()

    latencies: list[float] = []
    last_ns: dict[int, int] = {}
    for out in outs:
        result = json.loads(out.read_text())
        assert not result["stalled"]
        assert result["events_complete"] == total
        latencies += [us / 1000 for us in result["latencies_us"]]
        for sent, received in result["last_ns"].items():
            last_ns[int(sent)] = max(received, last_ns.get(int(sent), 0))
    assert len(latencies) == ROUNDS * len(targets)
    frames = total * len(targets)
    return RunResult(server.name, latencies, cpu / frames * 1e6, window, seconds, last_ns)


def breakdown(stats: Path, runs: list[RunResult]) -> dict[str, list[float]]:
    """Per measured event (ms): publish → handed to the app (Redis, the app's loop, and any
    earlier event still being written), → its direct sends returned (the app writing 250
    frames), → its last frame parsed by a client (kernel, the client processes' own CPU)."""
    parts: dict[str, list[float]] = {
        "first_to_app": [],
        "to_app": [],
        "writing": [],
        "to_client": [],
        "total": [],
    }
    if not stats.exists():
        return parts
    last_ns: dict[int, int] = {}
    for run in runs:
        last_ns.update(run.last_ns)
    # Measured events only (not warm-up rounds, nor those of the other server's runs: both
    # servers hear every event), in publishing order: each round is USERS events in a row.
    measured = sorted(e for e in json.loads(stats.read_text())["events"] if e[0] in last_ns)
    for n, (sent, got, done) in enumerate(measured):
        received = last_ns[sent]
        if n % USERS == 0:
            # Nothing ahead of it in the app: Redis and the app's wake-up alone.
            parts["first_to_app"].append((got - sent) / 1e6)
        parts["to_app"].append((got - sent) / 1e6)
        parts["writing"].append((done - got) / 1e6)
        parts["to_client"].append((received - done) / 1e6)
        parts["total"].append((received - sent) / 1e6)
    return parts


def full_gcs_in(stats: Path, windows: list[tuple[float, float]]) -> list[float]:
    """Durations (ms) of the full collections a server logged inside the given windows."""
    if not stats.exists():
        return []
    logged: list[list[float]] = json.loads(stats.read_text())["full_gcs"]
    return [ms for at, ms in logged if any(lo <= at <= hi for lo, hi in windows)]


def spread(values: list[float], fmt: str = ".1f") -> str:
    ordered = sorted(values)
    return f"{statistics.median(ordered):{fmt}} ({ordered[0]:{fmt}}–{ordered[-1]:{fmt}})"


async def test_fanout_1000_sockets(
    settings: Settings,
    committed_database: Database,  # noqa: ARG001 - migrated tables, emptied afterwards
    redis: Redis,
    redis_server: Server,
    tmp_path: Path,
    bench: BenchReport,
) -> None:
    raise_open_file_limit()
    atelier = await start_server("atelier", settings, redis_server.url, tmp_path)
    bare: FanoutServer | None = None
    results: list[RunResult] = []
    try:
        bare = await start_server("bare", settings, redis_server.url, tmp_path)
        cookies: list[str] = []
        user_ids: list[uuid.UUID] = []
        async with httpx.AsyncClient(base_url=atelier.base_url, timeout=10) as client:
            for _ in range(USERS):
                cookie = await register_cookie(atelier.base_url)
                me = await client.get("/api/auth/me", headers={"Cookie": cookie})
                assert me.status_code == 200, me.text
                cookies.append(cookie)
                user_ids.append(uuid.UUID(me.json()["id"]))
        ws_base = {
            s.name: s.base_url.replace("http://", "ws://", 1) + "/ws" for s in (atelier, bare)
        }
        targets: dict[str, list[dict[str, Any]]] = {
            "atelier": [
                {"url": ws_base["atelier"], "headers": {"Cookie": cookies[n % USERS]}}
                for n in range(USERS * SOCKETS_PER_USER)
            ],
            "bare": [
                {"url": f"{ws_base['bare']}?user={user_ids[n % USERS]}"}
                for n in range(USERS * SOCKETS_PER_USER)
            ],
        }
        tasks = bench_tasks(user_ids)
        for repeat in range(REPEATS):
            for server in (bare, atelier):
                result = await run_once(
                    server,
                    targets[server.name],
                    tasks,
                    redis,
                    redis_server.url,
                    tmp_path,
                    f"{server.name}-{repeat}",
                )
                results.append(result)
                bench.line(
                    f"BENCH fanout server={server.name} run={repeat} sockets="
                    f"{USERS * SOCKETS_PER_USER} rounds={ROUNDS} p50_ms={result.p50:.1f} "
                    f"p99_ms={result.p99:.1f} cpu_us_per_frame={result.cpu_us_per_frame:.1f} "
                    f"run_s={result.seconds:.1f} gc={GC_MODE}"
                )
    finally:
        # SIGINT: uvicorn re-raises a SIGTERM after its shutdown, which would end the process
        # before it writes its statistics; an interrupt ends it through its ``finally``.
        atelier.proc.stop(sig=signal.SIGINT)
        if bare is not None:
            bare.proc.stop(sig=signal.SIGINT)

    def of(name: str) -> list[RunResult]:
        return [r for r in results if r.server == name]

    gcs = {
        server.name: full_gcs_in(server.stats, [r.window for r in of(server.name)])
        for server in (atelier, bare)
    }
    parts = {server.name: breakdown(server.stats, of(server.name)) for server in (atelier, bare)}
    ratios = [
        a.cpu_us_per_frame / b.cpu_us_per_frame
        for a, b in zip(of("atelier"), of("bare"), strict=True)
    ]
    p99_ratios = [a.p99 / b.p99 for a, b in zip(of("atelier"), of("bare"), strict=True)]
    bench.line(f"  (median over {REPEATS} alternated runs, range in brackets; gc={GC_MODE})")
    bench.line("  | server | p50 ms | p99 ms | CPU µs per frame | full GCs (max ms) |")
    bench.line("  |---|---:|---:|---:|---:|")
    for name in ("bare", "atelier"):
        runs = of(name)
        bench.line(
            f"  | {name} | {spread([r.p50 for r in runs])} | {spread([r.p99 for r in runs])} "
            f"| {spread([r.cpu_us_per_frame for r in runs])} "
            f"| {len(gcs[name])} ({max(gcs[name], default=0):.0f}) |"
        )
    bench.line(
        "  where the time goes, per event (p50 / p99 ms over all runs' events): publish → app "
        "for a round's first event | publish → app, any event (includes waiting for earlier "
        "users' events to be written) | app writing its 250 frames | written → last frame "
        "parsed by a client | total"
    )
    for name in ("bare", "atelier"):
        cells = " | ".join(
            f"{percentile(v, 50):.1f} / {percentile(v, 99):.1f}" if v else "-"
            for v in parts[name].values()
        )
        bench.line(f"  | {name} | {cells} |")
    bench.line(
        f"  CPU per frame ÷ bare, per pair: {spread(ratios, '.2f')} (goal ≤ 1.2); "
        f"p99 ÷ bare p99: {spread(p99_ratios, '.2f')}; "
        f"atelier p99 {spread([r.p99 for r in of('atelier')])} ms (goal ≤ 50)"
    )
    bench.row(
        "fan-out, 1,000 sockets (4 users × 250) on one instance, closed loop "
        f"(`test_fanout_bench.py`, {REPEATS} × {ROUNDS} rounds alternated)",
        f"p50 {spread([r.p50 for r in of('atelier')])} ms, p99 "
        f"{spread([r.p99 for r in of('atelier')])} ms; CPU per frame "
        f"{spread([r.cpu_us_per_frame for r in of('atelier')])} µs, "
        f"{spread(ratios, '.2f')}× the bare app's; bare app p99 "
        f"{spread([r.p99 for r in of('bare')])} ms",
    )
