"""Task engine benchmarks on the real servers: event latency to WebSockets, empty-task throughput.

Run with ``make bench`` (``pytest tests/bench -q -s``). Figures are printed as ``BENCH …`` lines
and, at the end, as rows for the README's performance table. Only correctness is asserted (every
event received, every task succeeded); timings are measured, never asserted.

1. Event latency: a ``bench.progress`` task in a real ``atelier worker`` process calls
   ``ctx.progress()`` with ``time.time_ns()`` in the message; a client process with 1, 100 or
   1,000 sockets of one user, on one in-process uvicorn (committed Postgres, real Redis), records
   each receipt. Closed loop: the next event is sent once every socket has the previous one, so
   each figure is one event's latency, not a queue's. Reference: Redis pub/sub alone. Also
   reported: progress() → the event read off Redis in the API process (the worker's share), the
   API's CPU per delivered message and its full garbage collections during the run.
2. Throughput: ``test.noop`` tasks created with the task service (row, commit, enqueue after
   commit) and run by 1 and 2 ``atelier worker`` processes, from the first create until the last
   row has succeeded (median of a few runs). Reference: bare saq enqueue→complete with one
   in-process saq worker, run by run alternating with ours; the ratio is the median of the
   pairs'. Also reported: CPU per task in each process involved (Linux /proc).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis
from saq import Job, Worker
from saq.job import Status
from saq.queue.redis import RedisQueue
from saq.types import Context
from sqlalchemy import func, select

from backend.auth.service import create_user
from backend.composition import AppResources
from backend.config import Settings
from backend.core.db import Database, commit
from backend.realtime.hub import Hub
from backend.tasks import service
from backend.tasks.events import CHANNEL, decode_event
from backend.tasks.models import Task, TaskStatus
from tests.bench.conftest import BenchReport
from tests.bench.kinds import PROGRESS_KIND, parse_progress_message
from tests.bench.ws_clients import raise_open_file_limit
from tests.conftest import PASSWORD, AppFactory, unique_email
from tests.live import serve
from tests.servers import Server
from tests.tasks.conftest import ENGINE_SETTINGS, ROOT, WorkerProcess

# --- sizes ---------------------------------------------------------------------------------

EVENTS = 1000
# Sent first and left out of the figures, while connection pools and caches warm up.
EVENT_WARMUP = 20
SOCKET_COUNTS = (1, 100, 1000)
# Sockets opened at once by the client process.
OPEN_CONCURRENCY = 50

TASKS = 500
TASK_WARMUP = 50
# Each throughput figure is the median of this many runs: a shared 2-core machine is noisy.
REPEATS = int(os.environ.get("BENCH_TASK_REPEATS", "5"))
WORKER_PROCESS_COUNTS = (1, 2)
# Per worker process; the production default (ATELIER_WORKER_CONCURRENCY).
WORKER_CONCURRENCY = 4
# Tasks created at once, so that a single creating coroutine is not what limits the figure.
CREATORS = 8

# Generous bounds for a slow 2-core machine: hitting one is a failure, not a figure.
CLIENTS_READY_TIMEOUT = 120.0
CLIENTS_RUN_TIMEOUT = 300.0
TASKS_TIMEOUT = 120.0


# --- figures -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Latency:
    samples_ms: list[float]

    @property
    def p50(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.samples_ms, 99)


@dataclass
class Throughput:
    tasks: int
    seconds: float
    create_seconds: float
    # CPU seconds spent during the run, by process group.
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.tasks / self.seconds


@dataclass
class Series:
    """Repeated throughput runs: the median rate, the spread, and CPU pooled over all runs."""

    runs: list[Throughput]

    @property
    def per_second(self) -> float:
        return percentile([run.per_second for run in self.runs], 50)

    @property
    def spread(self) -> str:
        rates = sorted(run.per_second for run in self.runs)
        return f"{rates[0]:.0f}–{rates[-1]:.0f}"

    def cpu_ms_per_task(self, name: str) -> float:
        tasks = sum(run.tasks for run in self.runs)
        return sum(run.cpu.get(name, 0.0) for run in self.runs) / tasks * 1000

    def cpu_line(self, names: Sequence[str]) -> str:
        return " ".join(f"{name}={self.cpu_ms_per_task(name):.2f}" for name in names)

    @property
    def create_seconds(self) -> float:
        return percentile([run.create_seconds for run in self.runs], 50)


@contextlib.contextmanager
def full_gc_pauses() -> Iterator[list[float]]:
    """Durations (ms) of this process's full (generation 2) garbage collections meanwhile."""
    pauses: list[float] = []
    started = 0.0

    def track(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        elif info["generation"] == 2:
            pauses.append((time.perf_counter() - started) * 1000)

    gc.callbacks.append(track)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(track)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process so far (Linux ``/proc``); 0 if it cannot be read."""
    try:
        # Fields after the parenthesised command name: state is 3rd, utime 14th, stime 15th.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(parent: int) -> list[int]:
    pids: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


CpuGroups = Callable[[], dict[str, list[int]]]


def cpu_snapshot(groups: CpuGroups) -> dict[str, float]:
    """CPU seconds so far of this process (``self``) and of each group of processes (listed
    afresh each time: Postgres starts a backend per new connection)."""
    snapshot = {"self": time.process_time()}
    for name, pids in groups().items():
        snapshot[name] = sum(process_cpu_seconds(pid) for pid in pids)
    return snapshot


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


# --- workers -------------------------------------------------------------------------------


async def start_workers(settings: Settings, count: int, logs: Path) -> list[WorkerProcess]:
    workers: list[WorkerProcess] = []
    try:
        for n in range(count):
            workers.append(WorkerProcess(settings, logs / f"worker-{count}-{n}.log"))
        for worker in workers:
            await worker.wait_ready()
    except BaseException:
        await stop_workers(workers)
        raise
    return workers


async def stop_workers(workers: list[WorkerProcess], grace: float = 10.0) -> None:
    """SIGTERM each (a graceful saq shutdown), then kill whatever is left, by PID."""
    for worker in workers:
        if worker.proc.poll() is None:
            worker.terminate()
    deadline = time.monotonic() + grace
    while any(w.proc.poll() is None for w in workers) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for worker in workers:
        worker.stop()


# --- the event channel, read directly ---------------------------------------------------

EventHandler = Callable[[dict[str, Any], int, float], None]


@asynccontextmanager
async def tap_events(redis_url: str, handler: EventHandler) -> AsyncIterator[None]:
    """Every task event on the channel, as the hub sees it before routing: ``handler(task,
    time.time_ns(), time.perf_counter())`` at receipt, in a reader task of this process."""
    client = Redis.from_url(redis_url)
    pubsub = client.pubsub()

    async def read() -> None:
        while True:
            message = await pubsub.get_message(timeout=5.0)
            if message is not None and message["type"] == "message":
                received_ns, received = time.time_ns(), time.perf_counter()
                _, event = decode_event(message["data"])
                handler(event["task"], received_ns, received)

    reader: asyncio.Task[None] | None = None
    try:
        await pubsub.subscribe(CHANNEL)
        while (await pubsub.get_message(timeout=5.0) or {}).get("type") != "subscribe":
            pass
        reader = asyncio.create_task(read())
        yield
    finally:
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await pubsub.aclose()
        await client.aclose()


# --- 1. event latency ----------------------------------------------------------------------


async def redis_pubsub_latency(url: str, count: int, warmup: int) -> Latency:
    """Publish → subscriber receipt on bare redis-py, read the way the hub reads (one reader
    task looping on ``get_message``), one message at a time."""
    channel = f"bench:reference:{uuid.uuid4().hex}"
    publisher, subscriber = Redis.from_url(url), Redis.from_url(url)
    pubsub = subscriber.pubsub()
    received: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    async def reader() -> None:
        while True:
            message = await pubsub.get_message(timeout=5.0)
            if message is not None and message["type"] == "message":
                received.put_nowait((int(message["data"]), time.time_ns()))

    samples: list[float] = []
    try:
        await pubsub.subscribe(channel)
        listening = asyncio.create_task(reader())
        try:
            # The subscribe confirmation is read by the reader; wait until it is through.
            while await publisher.pubsub_numsub(channel) != [(channel.encode(), 1)]:
                await asyncio.sleep(0.01)
            for _ in range(warmup + count):
                sent = time.time_ns()
                await publisher.publish(channel, str(sent))
                sent_ns, received_ns = await asyncio.wait_for(received.get(), 5.0)
                assert sent_ns == sent
                samples.append((received_ns - sent_ns) / 1e6)
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
    finally:
        await pubsub.aclose()
        await publisher.aclose()
        await subscriber.aclose()
    return Latency(samples[warmup:])


async def register_cookie(base_url: str) -> str:
    """A new user registered over HTTP; the ``Cookie`` header that signs them in."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        answer = await client.post(
            "/api/auth/register", json={"email": unique_email("bench"), "password": PASSWORD}
        )
    assert answer.status_code == 201, answer.text
    # Straight from Set-Cookie: the cookies are Secure, so httpx would not send them over http.
    jar: SimpleCookie = SimpleCookie()
    for header in answer.headers.get_list("set-cookie"):
        jar.load(header)
    return "; ".join(f"{name}={morsel.value}" for name, morsel in jar.items() if morsel.value)


async def wait_finished(db: Database, task_id: uuid.UUID, timeout: float = 30.0) -> Task:
    deadline = time.monotonic() + timeout
    while True:
        async with db.sessionmaker() as session:
            task = await session.get(Task, task_id)
        assert task is not None
        if task.status.finished or time.monotonic() > deadline:
            return task
        await asyncio.sleep(0.05)


async def wait_unsubscribed(hub: Hub, timeout: float = 30.0) -> None:
    """Let the previous run's sockets be torn down before the next one is measured."""
    deadline = time.monotonic() + timeout
    while hub.subscriber_count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


@dataclass
class SocketRun:
    sockets: int
    latency: Latency
    # progress() → the event read off Redis in the API process, before the hub routes it.
    to_redis: Latency
    open_seconds: float
    events_seconds: float
    # CPU seconds during the events: the API instance (this process) and the client process.
    api_cpu_seconds: float
    clients_cpu_seconds: float
    # The API process's full garbage collections during the events, in ms.
    api_full_gc_ms: list[float]

    @property
    def api_cpu_us_per_message(self) -> float:
        messages = (EVENT_WARMUP + EVENTS) * self.sockets
        return self.api_cpu_seconds / messages * 1e6


async def measure_sockets(
    *,
    app: FastAPI,
    base_url: str,
    cookie: str,
    user_id: uuid.UUID,
    redis_url: str,
    sockets: int,
    workdir: Path,
) -> SocketRun:
    resources: AppResources = app.state.resources
    await wait_unsubscribed(resources.hub)
    total = EVENT_WARMUP + EVENTS
    out = workdir / f"ws-clients-{sockets}.json"
    ack_key = f"bench:ack:{uuid.uuid4().hex}"
    to_redis_ms: list[float] = []

    def on_event(task: dict[str, Any], received_ns: int, _received: float) -> None:
        parsed = parse_progress_message(task.get("message"))
        if parsed is not None and parsed[0] >= EVENT_WARMUP:
            to_redis_ms.append((received_ns - parsed[1]) / 1e6)

    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_COOKIE": cookie}
    clients = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.ws_clients",
        "--url",
        base_url.replace("http://", "ws://", 1) + "/ws",
        "--sockets",
        str(sockets),
        "--events",
        str(total),
        "--warmup",
        str(EVENT_WARMUP),
        "--redis-url",
        redis_url,
        "--ack-key",
        ack_key,
        "--out",
        str(out),
        "--concurrency",
        str(OPEN_CONCURRENCY),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert clients.stdout is not None
        ready = await asyncio.wait_for(clients.stdout.readline(), CLIENTS_READY_TIMEOUT)
        assert ready.startswith(b"READY"), f"client process did not get ready: {ready!r}"
        assert resources.hub.subscriber_count == sockets
        api_cpu = time.process_time()
        with full_gc_pauses() as gc_ms:
            async with tap_events(redis_url, on_event):
                async with resources.db.sessionmaker() as session:
                    task = await service.create_task(
                        session,
                        resources.queue,
                        resources.redis,
                        user_id=user_id,
                        kind=PROGRESS_KIND,
                        payload={"events": total, "ack_key": ack_key},
                    )
                    await commit(session)
                done = await asyncio.wait_for(clients.stdout.readline(), CLIENTS_RUN_TIMEOUT)
        api_cpu = time.process_time() - api_cpu
        assert done.startswith(b"DONE"), f"client process ended early: {done!r}"
        # Then the client closes its sockets and writes its figures.
        assert await asyncio.wait_for(clients.wait(), CLIENTS_READY_TIMEOUT) == 0
    finally:
        if clients.returncode is None:
            clients.kill()
            await clients.wait()
    result: dict[str, Any] = json.loads(out.read_text())
    # Correctness: every socket received every event, and the task ran to its end.
    assert not result["stalled"], f"events stopped arriving after {result['events_complete']}"
    assert result["events_complete"] == total
    assert len(result["latencies_us"]) == EVENTS * sockets
    assert len(to_redis_ms) == EVENTS
    row = await wait_finished(resources.db, task.id)
    assert row.status == TaskStatus.succeeded, (row.status, row.error)
    return SocketRun(
        sockets,
        Latency([us / 1000 for us in result["latencies_us"]]),
        Latency(to_redis_ms),
        result["open_seconds"],
        result["events_seconds"],
        api_cpu,
        result["cpu_seconds"],
        gc_ms,
    )


async def test_event_latency_progress_to_websocket(
    make_live_app: AppFactory,
    settings: Settings,
    redis_server: Server,
    tmp_path: Path,
    bench: BenchReport,
) -> None:
    nofile = raise_open_file_limit()
    reference = await redis_pubsub_latency(redis_server.url, EVENTS, EVENT_WARMUP)
    bench.line(
        f"BENCH redis_pubsub_latency events={EVENTS} p50_ms={reference.p50:.3f} "
        f"p99_ms={reference.p99:.3f}"
    )
    # INFO would log every socket's open and close; nothing per event either way.
    app = make_live_app(log_level="WARNING")
    worker_settings = settings.model_copy(
        update={
            "task_modules": [*ENGINE_SETTINGS["task_modules"], "tests.bench.kinds"],
            "worker_concurrency": 1,
        }
    )
    runs: list[SocketRun] = []
    async with serve(app) as base_url:
        cookie = await register_cookie(base_url)
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            me = await client.get("/api/auth/me", headers={"Cookie": cookie})
        assert me.status_code == 200, me.text
        user_id = uuid.UUID(me.json()["id"])
        workers = await start_workers(worker_settings, 1, tmp_path)
        try:
            for sockets in SOCKET_COUNTS:
                run = await measure_sockets(
                    app=app,
                    base_url=base_url,
                    cookie=cookie,
                    user_id=user_id,
                    redis_url=redis_server.url,
                    sockets=sockets,
                    workdir=tmp_path,
                )
                runs.append(run)
                latency = run.latency
                ratio = latency.p50 / reference.p50
                bench.line(
                    f"BENCH event_latency sockets={sockets} events={EVENTS} "
                    f"receipts={len(latency.samples_ms)} p50_ms={latency.p50:.2f} "
                    f"p99_ms={latency.p99:.2f} ratio_vs_redis_p50={ratio:.1f} "
                    f"worker_to_redis_p50_ms={run.to_redis.p50:.2f} "
                    f"worker_to_redis_p99_ms={run.to_redis.p99:.2f} "
                    f"open_s={run.open_seconds:.1f} run_s={run.events_seconds:.1f} "
                    f"api_cpu_s={run.api_cpu_seconds:.1f} "
                    f"clients_cpu_s={run.clients_cpu_seconds:.1f} "
                    f"api_cpu_us_per_message={run.api_cpu_us_per_message:.0f} "
                    f"api_full_gc={len(run.api_full_gc_ms)} "
                    f"api_full_gc_max_ms={max(run.api_full_gc_ms, default=0):.0f}"
                )
        finally:
            await stop_workers(workers)

    bench.line(f"  (RLIMIT_NOFILE soft limit {nofile}; one worker process, clients in another)")
    bench.line(
        "  | sockets | p50 ms | p99 ms | p50 ÷ Redis p50 | of which progress() → Redis p50 / p99 |"
    )
    bench.line("  |---:|---:|---:|---:|---:|")
    bench.line(f"  | Redis pub/sub alone | {reference.p50:.2f} | {reference.p99:.2f} | 1 | |")
    for run in runs:
        ratio = run.latency.p50 / reference.p50
        bench.line(
            f"  | {run.sockets} | {run.latency.p50:.2f} | {run.latency.p99:.2f} | {ratio:.1f} "
            f"| {run.to_redis.p50:.2f} / {run.to_redis.p99:.2f} |"
        )
    for run in runs:
        noun = "socket" if run.sockets == 1 else "sockets"
        gc_note = (
            f"; full GC pauses in the API process up to {max(run.api_full_gc_ms):.0f} ms"
            if run.api_full_gc_ms
            else ""
        )
        bench.row(
            f"task event, worker `progress()` → WebSocket, {run.sockets:,} {noun} of one user "
            "on one instance",
            f"p50 {run.latency.p50:.1f} ms, p99 {run.latency.p99:.1f} ms "
            f"({EVENTS:,} events; Redis pub/sub alone p50 {reference.p50:.2f} ms{gc_note})",
        )


# --- 2. throughput -------------------------------------------------------------------------


@dataclass
class Finished:
    """Moments (``perf_counter``) at which tasks' terminal events were read off the channel."""

    succeeded: dict[str, float] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)

    def __call__(self, task: dict[str, Any], _received_ns: int, received: float) -> None:
        if task["status"] == TaskStatus.succeeded:
            self.succeeded.setdefault(task["id"], received)
        elif task["status"] in (TaskStatus.failed, TaskStatus.canceled):
            self.failed.add(task["id"])


async def run_tasks(
    resources: AppResources,
    finished: Finished,
    user_id: uuid.UUID,
    count: int,
    cpu_groups: CpuGroups,
) -> Throughput:
    """Create ``count`` noop tasks, ``CREATORS`` at a time; time until the last has succeeded."""
    ids: list[str] = []
    gate = asyncio.Semaphore(CREATORS)

    async def create() -> None:
        async with gate, resources.db.sessionmaker() as session:
            task = await service.create_task(
                session, resources.queue, resources.redis, user_id=user_id, kind="test.noop"
            )
            await commit(session)
            ids.append(str(task.id))

    cpu_before = cpu_snapshot(cpu_groups)
    started = time.perf_counter()
    await asyncio.gather(*(create() for _ in range(count)))
    created = time.perf_counter()
    deadline = created + TASKS_TIMEOUT
    while not all(task_id in finished.succeeded for task_id in ids):
        assert not finished.failed.intersection(ids), "a noop task failed"
        assert time.perf_counter() < deadline, (
            f"{sum(i in finished.succeeded for i in ids)} of {count} tasks succeeded in time"
        )
        await asyncio.sleep(0.01)
    last = max(finished.succeeded[task_id] for task_id in ids)
    cpu = cpu_used(cpu_before, cpu_snapshot(cpu_groups))
    async with resources.db.sessionmaker() as session:
        done = await session.scalar(
            select(func.count())
            .select_from(Task)
            .where(
                Task.id.in_([uuid.UUID(i) for i in ids]),
                Task.status == TaskStatus.succeeded,
                Task.attempts == 1,
            )
        )
    assert done == count, f"{done} of {count} rows succeeded on their first attempt"
    return Throughput(count, last - started, created - started, cpu)


ReferenceBatch = Callable[[int], Awaitable[Throughput]]


@asynccontextmanager
async def saq_reference(redis: Redis, cpu_groups: CpuGroups) -> AsyncIterator[ReferenceBatch]:
    """Bare saq: ``batch(n)`` enqueues a no-op function ``n`` times and times it until the last
    job is complete, on one in-process worker with the same concurrency and timers as ours.
    The worker idles on its own queue between batches, so batches can alternate with ours."""
    queue = RedisQueue(redis, name=f"bench-reference-{uuid.uuid4().hex[:8]}")
    completed: dict[str, float] = {}

    async def noop(_ctx: Context) -> None:
        return None

    async def after(ctx: Context) -> None:
        job = ctx.get("job")
        if job is not None and job.status == Status.COMPLETE:
            completed[job.key] = time.perf_counter()

    worker: Worker[Context] = Worker(
        queue,
        functions=[("noop", noop)],
        concurrency=WORKER_CONCURRENCY,
        after_process=after,
        timers={"sweep": 1, "abort": 1, "schedule": 1, "worker_info": 1},
        dequeue_timeout=1,
    )
    worker.SIGNALS = []
    runner = asyncio.create_task(worker.start())

    async def batch(size: int) -> Throughput:
        keys = [str(uuid.uuid4()) for _ in range(size)]
        gate = asyncio.Semaphore(CREATORS)

        async def enqueue(key: str) -> None:
            # The same job options as TaskQueue.job_for, minus the row behind them.
            job = Job(function="noop", key=key, timeout=20, heartbeat=0, retries=2, ttl=3600)
            async with gate:
                assert await queue.enqueue(job) is not None

        cpu_before = cpu_snapshot(cpu_groups)
        started = time.perf_counter()
        await asyncio.gather(*(enqueue(key) for key in keys))
        created = time.perf_counter()
        deadline = created + TASKS_TIMEOUT
        while not all(key in completed for key in keys):
            assert time.perf_counter() < deadline, "saq reference jobs did not complete"
            await asyncio.sleep(0.01)
        finished = max(completed[k] for k in keys)
        cpu = cpu_used(cpu_before, cpu_snapshot(cpu_groups))
        return Throughput(size, finished - started, created - started, cpu)

    try:
        await batch(TASK_WARMUP)
        yield batch
    finally:
        await worker.stop()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await queue.disconnect()


def paired_ratios(subject: Series, reference: Series) -> Series:
    """Each subject run ÷ the reference run just before it, as a series (median, spread)."""
    return Series(
        [
            Throughput(1, ref.per_second / run.per_second, 0.0)
            for run, ref in zip(subject.runs, reference.runs, strict=True)
        ]
    )


async def test_empty_task_throughput(
    settings: Settings,
    committed_database: Database,
    redis: Redis,
    pg_server: Server,
    redis_server: Server,
    tmp_path: Path,
    bench: BenchReport,
) -> None:
    def servers() -> dict[str, list[int]]:
        return {
            "postgres": [pg_server.proc.pid, *children_of(pg_server.proc.pid)],
            "redis": [redis_server.proc.pid],
        }

    engine = settings.model_copy(
        update={
            "task_modules": ENGINE_SETTINGS["task_modules"],
            "worker_concurrency": WORKER_CONCURRENCY,
        }
    )
    resources = AppResources(engine, db=committed_database, redis=redis)
    async with committed_database.sessionmaker() as session:
        user = await create_user(session, email=unique_email("bench"), password=PASSWORD)
        await commit(session)

    # (processes, ours, bare saq's runs alternating with ours, ours ÷ saq per pair)
    results: list[tuple[int, Series, Series, Series]] = []
    finished = Finished()
    async with tap_events(redis_server.url, finished), saq_reference(redis, servers) as saq:
        for processes in WORKER_PROCESS_COUNTS:
            workers = await start_workers(engine, processes, tmp_path)

            def groups(workers: list[WorkerProcess] = workers) -> dict[str, list[int]]:
                return {"workers": [w.proc.pid for w in workers], **servers()}

            ours: list[Throughput] = []
            theirs: list[Throughput] = []
            try:
                await run_tasks(resources, finished, user.id, TASK_WARMUP, groups)
                for _ in range(REPEATS):
                    # Alternating, so that a busy spell on the shared machine hits both sides.
                    theirs.append(await saq(TASKS))
                    ours.append(await run_tasks(resources, finished, user.id, TASKS, groups))
            finally:
                await stop_workers(workers)
            measured, reference = Series(ours), Series(theirs)
            ratio = paired_ratios(measured, reference)
            results.append((processes, measured, reference, ratio))
            bench.line(
                f"BENCH saq_reference tasks={TASKS} concurrency={WORKER_CONCURRENCY} in_process=1 "
                f"repeats={REPEATS} tasks_per_s={reference.per_second:.0f} "
                f"range={reference.spread} cpu_ms_per_task: {reference.cpu_line(['self', 'redis'])}"
            )
            bench.line(
                f"BENCH task_throughput processes={processes} concurrency={WORKER_CONCURRENCY} "
                f"tasks={TASKS} repeats={REPEATS} tasks_per_s={measured.per_second:.0f} "
                f"range={measured.spread} create_s={measured.create_seconds:.2f} "
                f"ratio_vs_saq={ratio.per_second:.2f} ratio_range={ratio_spread(ratio)} "
                f"cpu_ms_per_task: {measured.cpu_line(['self', 'workers', 'postgres', 'redis'])}"
            )

    bench.line(
        f"  (median of {REPEATS} runs of {TASKS} tasks, each right after a bare saq run of as "
        f"many jobs; ÷ bare saq is the median of the pairs' ratios; worker concurrency "
        f"{WORKER_CONCURRENCY} per process; {CREATORS} concurrent creators in this process; "
        "CPU ms per task)"
    )
    bench.line(
        "  | runner | tasks/s (range) | ÷ bare saq (range) | CPU: creator | workers | Postgres "
        "| Redis |"
    )
    bench.line("  |---|---:|---:|---:|---:|---:|---:|")
    for processes, measured, reference, ratio in results:
        bench.line(
            f"  | bare saq, 1 in-process worker (alongside {processes}) "
            f"| {reference.per_second:.0f} ({reference.spread}) | 1 "
            f"| {reference.cpu_ms_per_task('self'):.2f} (worker included) | | "
            f"| {reference.cpu_ms_per_task('redis'):.2f} |"
        )
        bench.line(
            f"  | {processes} × atelier worker | {measured.per_second:.0f} ({measured.spread}) "
            f"| {ratio.per_second:.2f} ({ratio_spread(ratio)}) "
            f"| {measured.cpu_ms_per_task('self'):.2f} "
            f"| {measured.cpu_ms_per_task('workers'):.2f} "
            f"| {measured.cpu_ms_per_task('postgres'):.2f} "
            f"| {measured.cpu_ms_per_task('redis'):.2f} |"
        )
    for processes, measured, reference, ratio in results:
        noun = "process" if processes == 1 else "processes"
        cpu = sum(
            measured.cpu_ms_per_task(name) for name in ("self", "workers", "postgres", "redis")
        )
        bench.row(
            f"empty task end to end (row, enqueue after commit, run, row succeeded), "
            f"{processes} worker {noun} × concurrency {WORKER_CONCURRENCY}",
            f"{measured.per_second:.0f} tasks/s, {ratio.per_second:.2f}× bare saq "
            f"({ratio_spread(ratio)}; median of {REPEATS} alternating pairs × {TASKS}; "
            f"{cpu:.1f} ms CPU per task in all processes; bare saq, 1 in-process worker: "
            f"{reference.per_second:.0f} jobs/s)",
        )


def ratio_spread(ratio: Series) -> str:
    values = sorted(run.per_second for run in ratio.runs)
    return f"{values[0]:.2f}–{values[-1]:.2f}"
