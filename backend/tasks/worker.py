"""The worker: runs task handlers from the saq queue and keeps every row truthful.

One saq function, ``run_task``, looks up the row by the job key (= task id) and dispatches on
its kind. The row decides: a finished row is never run again (so a re-delivered job is a
no-op), attempts are counted on the row across saq jobs, and the retry budget is the row's.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, cast

import structlog
from redis.asyncio.client import Pipeline
from saq import Job, Worker
from saq.types import Context
from sqlalchemy import Update, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from backend import models as all_models  # every mapper, so relationships across features resolve
from backend.core.db import commit, utcnow
from backend.core.resources import Resources
from backend.tasks import events, rows, sweeper
from backend.tasks.deps import task_queue
from backend.tasks.models import Task, TaskStatus
from backend.tasks.queue import JOB_FUNCTION, RowsFirstQueue
from backend.tasks.registry import REGISTRY, TaskCanceled, TaskContext, TaskError, TaskSpec
from backend.tasks.rows import TransitionStore

log = structlog.get_logger(__name__)
MAX_ERROR_LENGTH = 1000
# Cloud Run gives a stopping container 10 s after SIGTERM. Running jobs get this long to finish,
# then are cancelled, which hands their rows back (at most CANCEL_DEADLINE_SECONDS); threads still
# busy with work nobody awaits any more (OpenCV cannot be interrupted) get THREAD_GRACE_SECONDS
# before the process exits without them: about 6 s in all, 8 s at worst.
SHUTDOWN_GRACE_SECONDS = 3
CANCEL_DEADLINE_SECONDS = 2.0
THREAD_GRACE_SECONDS = 1.0
WORK_THREAD_PREFIX = "atelier-work"
# A claimed task's "running" event waits this long: one that ends sooner is announced by its
# final event alone (its status counters still count the run), one round trip fewer per job.
RUNNING_EVENT_DELAY_SECONDS = 0.25
# Announcements in flight, kept referenced until done (the loop holds tasks only weakly).
_ANNOUNCING: set[asyncio.Task[bool]] = set()
SWEEPER_STOP_SECONDS = 2.0


# ``_transition``'s default: no saq job to complete with the event.
_NO_RESULT: Any = object()


class RetryLater(Exception):
    """Raised to saq so it re-queues the job with backoff; the row already says queued."""


class LeaseLost(Exception):
    """This attempt no longer owns the row (recovered by the sweeper, or past its lifetime)."""


def lifetime_limit(spec: TaskSpec) -> timedelta:
    """How long after its claim an attempt may hold its lease at all: the kind's timeout plus
    one lease for writing the outcome. A handler that ignores cancellation keeps running, but
    its row is recovered by the sweeper once this has passed."""
    return timedelta(seconds=spec.timeout + spec.lease)


# The features' task kinds; every API and worker process registers them.
BUILTIN_TASK_MODULES = (
    "backend.images.tasks",
    "backend.sketches.tasks",
    "backend.ai.tasks",
    "backend.batches.tasks",
)


def load_task_modules(modules: list[str]) -> None:
    for module in (*BUILTIN_TASK_MODULES, *modules):
        importlib.import_module(module)


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:MAX_ERROR_LENGTH]


class TaskRunner:
    def __init__(
        self,
        resources: Resources,
        job: Job | None,
        transitions: TransitionStore | None = None,
    ) -> None:
        self.resources = resources
        self.job = job
        # Single-statement transitions (claim, finish); see ``backend.tasks.rows``.
        self.transitions = transitions or TransitionStore.shared(resources.db)
        # The claimed row while its "running" event is held back, the timer that sends it, and
        # the send in flight once it fired.
        self._unannounced: Task | None = None
        self._announce_timer: asyncio.TimerHandle | None = None
        self._announcing: asyncio.Task[bool] | None = None

    def _announce_later(self, task: Task) -> None:
        self._unannounced = task
        self._announce_timer = asyncio.get_running_loop().call_later(
            RUNNING_EVENT_DELAY_SECONDS, self._announce
        )

    def _announce(self) -> None:
        task, self._unannounced, self._announce_timer = self._unannounced, None, None
        if task is not None:
            announcing = asyncio.create_task(events.publish(self.resources.redis, task))
            _ANNOUNCING.add(announcing)
            announcing.add_done_callback(_ANNOUNCING.discard)
            self._announcing = announcing

    async def _settle_announcement(self) -> Task | None:
        """Before any later event of this run: the claimed row if its "running" event was
        never sent (the next event then counts it first), after waiting for one in flight, so
        that no event overtakes an earlier one."""
        if self._announce_timer is not None:
            self._announce_timer.cancel()
            self._announce_timer = None
        if self._announcing is not None:
            announcing, self._announcing = self._announcing, None
            await asyncio.shield(announcing)
        prior, self._unannounced = self._unannounced, None
        return prior

    async def _transition(
        self,
        statement: Update,
        params: dict[str, Any],
        *,
        job_result: Any = _NO_RESULT,
        announce: bool = True,
    ) -> Task | None:
        """Run one conditional ``UPDATE … RETURNING`` of the row; publish what it wrote (unless
        ``announce`` is False), with saq's completion of the job when ``job_result`` is given
        (one round trip for both).

        The row comes back as a plain result row, which has every column the callers and the
        event read, by name, as the ORM object has."""
        for retry in range(rows.RETRY_ON_DISCONNECT + 1):
            try:
                row = await self.transitions.execute(statement, params)
                break
            except DBAPIError as exc:
                # A pooled connection Postgres dropped (a restart): the pool has discarded
                # its connections, so the next try connects afresh.
                if not exc.connection_invalidated or retry == rows.RETRY_ON_DISCONNECT:
                    raise
        if row is None:
            return None
        task = cast(Task, row)
        if not announce:
            return task
        prior = await self._settle_announcement()
        job = self.job
        queue = job.queue if job is not None else None
        if (
            job is None
            or job_result is _NO_RESULT
            or not isinstance(queue, RowsFirstQueue)
            or queue.redis is not self.resources.redis
        ):
            await events.publish(self.resources.redis, task, prior=prior)
            return task

        def complete(pipe: Pipeline, queue: RowsFirstQueue = queue, job: Job = job) -> None:
            queue.stage_finish(pipe, job, job_result)

        if await events.publish(self.resources.redis, task, complete, prior=prior):
            # saq's own finish of this job, which follows, has nothing left to write.
            queue.finished_early(job)
        return task

    @contextlib.asynccontextmanager
    async def _row(self, task_id: uuid.UUID) -> AsyncIterator[tuple[AsyncSession, Task | None]]:
        """A short transaction on the row, committed (and its event published) on exit."""
        async with self.resources.db.sessionmaker() as session:
            task = await session.scalar(select(Task).where(Task.id == task_id).with_for_update())
            yield session, task
            await commit(session)
            if task is not None:
                prior = await self._settle_announcement()
                await events.publish(self.resources.redis, task, prior=prior)

    async def _heartbeat(self, pct: float | None = None) -> None:
        if self.job is None:
            return
        try:
            if pct is None:
                await self.job.update()
            else:
                await self.job.update(progress=pct / 100)
        except Exception as exc:  # noqa: BLE001 - a missed heartbeat must not fail the work
            log.warning("heartbeat_failed", job=self.job.key, error=str(exc))

    async def _renew(self, task_id: uuid.UUID, attempt: int, spec: TaskSpec) -> bool:
        """Extend this attempt's lease; False once the row is no longer this attempt's to hold.

        The owner check lives in the UPDATE itself (attempts is the claim's generation, bumped
        under a row lock by every claim), so a renewal loop that somehow outlived its attempt
        can never keep a recovered, re-claimed or finished row alive, nor one past its lifetime.
        """
        now = utcnow()
        try:
            async with asyncio.timeout(max(spec.heartbeat, 1)):
                async with self.resources.db.sessionmaker() as session:
                    result = await session.execute(
                        update(Task)
                        .where(
                            Task.id == task_id,
                            Task.status == TaskStatus.running,
                            Task.attempts == attempt,
                            Task.started_at > now - lifetime_limit(spec),
                        )
                        .values(deadline_at=now + timedelta(seconds=spec.lease))
                    )
                    await session.commit()
        except Exception as exc:  # noqa: BLE001 - a missed beat only shortens the lease
            log.warning("lease_renewal_failed", task_id=str(task_id), error=str(exc))
            return True
        return bool(getattr(result, "rowcount", 0))

    async def _ticker(
        self,
        task_id: uuid.UUID,
        attempt: int,
        spec: TaskSpec,
        stop: asyncio.Event,
        owner: asyncio.Task[Any] | None,
    ) -> None:
        # Liveness independent of the handler's progress calls: a long OpenCV step in a thread
        # must not look like a dead worker. Cancellation alone cannot end this loop safely (a
        # Redis or database call in flight may swallow it), so it also stops on a flag, when
        # the job's task is done, and when the row refuses the renewal.
        # It is started half a heartbeat after the claim (``run``), so a renewal is due at once.
        def over() -> bool:
            return stop.is_set() or (owner is not None and owner.done())

        while not over():
            if not await self._renew(task_id, attempt, spec):
                log.warning("lease_lost", task_id=str(task_id), attempt=attempt)
                break
            if over():
                break
            await self._heartbeat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), spec.heartbeat / 2)

    async def _claim_fast(self, task_id: uuid.UUID, spec: TaskSpec) -> Task | None:
        """The common claim in one statement; None leaves every other case to ``_claim``."""
        now = utcnow()
        task = await self._transition(
            rows.CLAIM,
            {
                "p_id": task_id,
                "p_kind": spec.kind,
                "p_now": now,
                "p_deadline": now + timedelta(seconds=spec.lease),
            },
            announce=False,
        )
        if task is not None:
            self._announce_later(task)
        return task

    async def _claim(
        self, task_id: uuid.UUID, kind: str | None = None
    ) -> tuple[Task, TaskSpec] | None:
        fast_spec = REGISTRY.get(kind) if kind is not None else None
        if fast_spec is not None:
            claimed = await self._claim_fast(task_id, fast_spec)
            if claimed is not None:
                return claimed, fast_spec
        async with self._row(task_id) as (_, task):
            if task is None:
                log.warning("task_row_missing", task_id=str(task_id))
                return None
            if task.status.finished:
                # Re-delivered after it already ended (a swept or duplicate job): nothing to do.
                return None
            spec = REGISTRY.get(task.kind)
            if spec is None:
                self._finish(
                    task,
                    TaskStatus.failed,
                    error=f"unknown task kind {task.kind!r}",
                    code="task.unknown_kind",
                )
                return None
            if task.cancel_requested:
                self._finish(task, TaskStatus.canceled, message="canceled")
                return None
            now = utcnow()
            if task.status == TaskStatus.running and task.deadline_at and task.deadline_at > now:
                # Another worker holds a live lease on it (a duplicate delivery): leave it be.
                log.info("task_already_running", task_id=str(task_id))
                return None
            task.status = TaskStatus.running
            task.attempts += 1
            task.started_at = now
            task.message = "started" if task.attempts == 1 else f"attempt {task.attempts}"
            task.deadline_at = now + timedelta(seconds=spec.lease)
            return task, spec

    @staticmethod
    def _finish(
        task: Task,
        status: TaskStatus,
        *,
        error: str | None = None,
        code: str | None = None,
        message: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        task.status = status
        task.finished_at = utcnow()
        task.deadline_at = None
        if status == TaskStatus.succeeded:
            task.progress = 100
            task.result = result
            task.error = task.error_code = None
        else:
            task.error = error
            task.error_code = code
        task.message = message or status.value

    async def progress(
        self, task_id: uuid.UUID, pct: int, message: str | None = None, *, attempt: int
    ) -> None:
        pct = max(0, min(100, int(pct)))
        async with self._row(task_id) as (_, task):
            if task is None or task.cancel_requested:
                raise TaskCanceled()
            spec = REGISTRY.get(task.kind)
            now = utcnow()
            if (
                task.status != TaskStatus.running
                or task.attempts != attempt
                or spec is None
                or (task.started_at is not None and now - task.started_at > lifetime_limit(spec))
            ):
                raise LeaseLost()
            # Monotonic: a retried attempt re-reporting early steps never moves the bar back.
            task.progress = max(task.progress, pct)
            task.deadline_at = now + timedelta(seconds=spec.lease)
            if message is not None:
                task.message = message[:200]
        await self._heartbeat(pct)

    async def run(self, task_id: uuid.UUID, kind: str | None = None) -> dict[str, Any] | None:
        claimed = await self._claim(task_id, kind)
        if claimed is None:
            return None
        task, spec = claimed
        attempt = task.attempts
        # Debug only: the row has started_at, and task_succeeded/task_failed end every run.
        log.debug("task_started", task_id=str(task_id), kind=task.kind, attempt=attempt)
        started = time.perf_counter()

        async def report(pct: int, message: str | None = None) -> None:
            await self.progress(task_id, pct, message, attempt=attempt)

        context = TaskContext(
            task_id=task.id,
            user_id=task.user_id,
            kind=task.kind,
            payload=dict(task.payload or {}),
            attempt=task.attempts,
            progress=report,
            resources=self.resources,
            links={
                "image_id": task.image_id,
                "sketch_id": task.sketch_id,
                "batch_id": task.batch_id,
            },
        )
        stop = asyncio.Event()
        owner = asyncio.current_task()
        tickers: list[asyncio.Task[None]] = []

        def start_ticker() -> None:
            if not stop.is_set():
                ticker = self._ticker(task_id, attempt, spec, stop, owner)
                tickers.append(asyncio.create_task(ticker))

        # A timer until the first renewal is due: most jobs end before it, and never pay for
        # a ticker task of their own.
        first_tick = asyncio.get_running_loop().call_later(spec.heartbeat / 2, start_ticker)
        try:
            async with asyncio.timeout(spec.timeout):
                result = await spec.handler(context)
        except TaskCanceled:
            await self._end(task_id, attempt, TaskStatus.canceled, message="canceled")
            return None
        except LeaseLost:
            # Recovered by the sweeper meanwhile: the row belongs to a newer attempt now.
            log.warning("task_lease_lost", task_id=str(task_id), attempt=attempt)
            return None
        except TimeoutError:
            await self._failed(
                task_id, attempt, spec, f"timed out after {spec.timeout:g} s", "task.timeout", True
            )
            return None
        except TaskError as exc:
            await self._failed(task_id, attempt, spec, _error_text(exc), exc.code, exc.retry)
            return None
        except asyncio.CancelledError:
            # Worker shutdown or a lost job: hand the row back so it runs again elsewhere.
            await asyncio.shield(self._release(task_id, attempt))
            raise
        except Exception as exc:
            log.exception("task_raised", task_id=str(task_id), kind=spec.kind)
            error = f"{type(exc).__name__}: {_error_text(exc)}"
            await self._failed(task_id, attempt, spec, error, "task.error", True)
            return None
        finally:
            # The flag, not the cancel, is what ends the ticker: the cancel may be swallowed.
            stop.set()
            first_tick.cancel()
            for ticker in tickers:
                ticker.cancel()
            # Whatever ends the run announces it, counting a "running" never sent; a run that
            # lost its row to a newer attempt must not announce an old state later.
            if self._announce_timer is not None:
                self._announce_timer.cancel()
                self._announce_timer = None
        await self._end(task_id, attempt, TaskStatus.succeeded, result=result, message="done")
        log.info(
            "task_succeeded",
            task_id=str(task_id),
            kind=spec.kind,
            seconds=round(time.perf_counter() - started, 3),
        )
        return result

    async def _end(
        self,
        task_id: uuid.UUID,
        attempt: int,
        status: TaskStatus,
        *,
        message: str,
        result: dict[str, Any] | None = None,
    ) -> None:
        """Finish the row in one statement if it is still this attempt's: unfinished, and no
        later attempt has claimed it (it may have been re-queued from this very attempt, whose
        outcome then still counts)."""
        params: dict[str, Any] = {
            "p_id": task_id,
            "p_attempt": attempt,
            "p_status": status,
            "p_now": utcnow(),
            "p_message": message,
        }
        if status == TaskStatus.succeeded:
            # run() returns ``result`` to saq, which completes the job with it.
            await self._transition(rows.SUCCEED, {**params, "p_result": result}, job_result=result)
        else:
            await self._transition(rows.FINISH, params)

    async def _failed(
        self,
        task_id: uuid.UUID,
        attempt: int,
        spec: TaskSpec,
        error: str,
        code: str,
        retry: bool,
    ) -> None:
        async with self._row(task_id) as (_, task):
            # Only from running: a row the sweeper already re-queued is left to its new job.
            if task is None or task.status != TaskStatus.running or task.attempts != attempt:
                return None
            if retry and task.attempts < task.max_attempts and not task.cancel_requested:
                task.status = TaskStatus.queued
                task.error, task.error_code = error, code
                task.message = f"attempt {task.attempts} failed; retrying"
                task.deadline_at = utcnow() + timedelta(
                    seconds=task_queue(self.resources).queue_grace + spec.retry_delay * 30
                )
                retry_now = True
            else:
                self._finish(task, TaskStatus.failed, error=error, code=code)
                retry_now = False
        log.warning(
            "task_failed", task_id=str(task_id), kind=spec.kind, code=code, retrying=retry_now
        )
        if retry_now:
            raise RetryLater(error)
        return None

    async def _release(self, task_id: uuid.UUID, attempt: int) -> None:
        try:
            async with self._row(task_id) as (_, task):
                if (
                    task is not None
                    and task.status == TaskStatus.running
                    and task.attempts == attempt
                ):
                    task.status = TaskStatus.queued
                    task.message = "interrupted; will resume"
                    task.deadline_at = utcnow() + timedelta(
                        seconds=task_queue(self.resources).queue_grace
                    )
        except Exception as exc:  # noqa: BLE001 - the sweeper recovers the row from its deadline
            log.warning("task_release_failed", task_id=str(task_id), error=str(exc))


class WorkerContext(Context, total=False):
    resources: Resources
    sweeper: asyncio.Task[None]
    transitions: TransitionStore


async def run_task(
    ctx: WorkerContext, *, task_id: str, kind: str | None = None
) -> dict[str, Any] | None:
    # ``kind`` rides on the job so the claim can be one statement; older jobs lack it.
    store = ctx.get("transitions")
    runner = TaskRunner(ctx["resources"], ctx.get("job"), store)
    return await runner.run(uuid.UUID(task_id), kind)


# saq's INFO line at every job's start and end (and enqueue): task_succeeded/task_failed say the
# same with the task's id and kind, and two JSON lines per job were ~10 % of a worker's CPU.
_SAQ_PER_JOB_LINES = ("Processing %s", "Finished %s", "Enqueuing %s")


def _drop_saq_per_job_lines(record: logging.LogRecord) -> bool:
    return not (record.levelno == logging.INFO and record.msg in _SAQ_PER_JOB_LINES)


def build_worker(resources: Resources, *, handle_signals: bool = True) -> Worker[WorkerContext]:
    settings = resources.settings
    load_task_modules(settings.task_modules)
    saq_log = logging.getLogger("saq")
    if _drop_saq_per_job_lines not in saq_log.filters:
        saq_log.addFilter(_drop_saq_per_job_lines)

    sweeper_stop = asyncio.Event()

    async def startup(ctx: WorkerContext) -> None:
        ctx["resources"] = resources
        ctx["transitions"] = TransitionStore(resources.db, size=settings.worker_concurrency)
        sweeper_stop.clear()
        ctx["sweeper"] = asyncio.create_task(sweeper.run_forever(resources, sweeper_stop))

    async def shutdown(ctx: WorkerContext) -> None:
        task = ctx.get("sweeper")
        if task is not None:
            # The flag ends the loop even if the cancel is swallowed by a command in flight;
            # the wait is bounded either way, so shutdown never hangs on it.
            sweeper_stop.set()
            task.cancel()
            await asyncio.wait({task}, timeout=SWEEPER_STOP_SECONDS)
        store = ctx.get("transitions")
        if store is not None:
            await store.dispose()

    worker: Worker[WorkerContext] = Worker(
        task_queue(resources).saq,
        functions=[(JOB_FUNCTION, run_task)],
        concurrency=settings.worker_concurrency,
        startup=startup,
        shutdown=shutdown,
        # One-second upkeep: saq's sweep (which re-queues jobs whose heartbeat stopped) is locked
        # cluster-wide per round, and a short sleep in every upkeep loop keeps shutdown quick,
        # since saq waits for those loops as well as for running jobs.
        timers={"sweep": 1, "abort": 1, "schedule": 1, "worker_info": 1},
        # A bounded dequeue wait lets shutdown and fakeredis (embedded) make progress.
        dequeue_timeout=1,
        shutdown_grace_period_s=SHUTDOWN_GRACE_SECONDS,
        cancellation_hard_deadline_s=CANCEL_DEADLINE_SECONDS,
    )
    if not handle_signals:
        # Embedded in the API process: uvicorn owns SIGINT/SIGTERM and stops us via lifespan.
        worker.SIGNALS = []
    return worker


@contextlib.asynccontextmanager
async def running_worker(resources: Resources) -> AsyncIterator[Worker[WorkerContext]]:
    """A worker as a task of this process: embedded mode (`make run`) and live tests."""
    worker = build_worker(resources, handle_signals=False)
    runner = asyncio.create_task(worker.start())
    try:
        yield worker
    finally:
        await worker.stop()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


def _busy_work_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(WORK_THREAD_PREFIX)]


async def serve_worker(resources: Resources) -> None:
    """``atelier worker``: run until SIGTERM/SIGINT, then finish or hand back running jobs.

    Ends the process itself when threads are still computing for jobs that were handed back:
    Python would otherwise wait for them at exit, past the platform's kill deadline.
    """
    executor = ThreadPoolExecutor(thread_name_prefix=WORK_THREAD_PREFIX)
    asyncio.get_running_loop().set_default_executor(executor)
    worker = build_worker(resources)
    log.info(
        "worker_starting", concurrency=resources.settings.worker_concurrency, kinds=sorted(REGISTRY)
    )
    try:
        await worker.start()
    finally:
        await resources.close()
    # Idle threads leave at once; busy ones finish work whose job is already handed back.
    executor.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + THREAD_GRACE_SECONDS
    while _busy_work_threads() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    busy = _busy_work_threads()
    if busy:
        log.warning("worker_stopped", abandoned_threads=len(busy))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    log.info("worker_stopped")


__all__ = [
    "RetryLater",
    "TaskRunner",
    "all_models",
    "build_worker",
    "run_task",
    "running_worker",
    "serve_worker",
]
