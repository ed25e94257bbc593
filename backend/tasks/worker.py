"""The worker: runs task handlers from the saq queue and keeps every row truthful.

One saq function, ``run_task``, looks up the row by the job key (= task id) and dispatches on
its kind. The row decides: a finished row is never run again (so a re-delivered job is a
no-op), attempts are counted on the row across saq jobs, and the retry budget is the row's.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import structlog
from saq import Job, Worker
from saq.types import Context
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend import models as all_models  # every mapper, so relationships across features resolve
from backend.core.db import commit, utcnow
from backend.core.resources import Resources
from backend.tasks import events, sweeper
from backend.tasks.deps import task_queue
from backend.tasks.models import Task, TaskStatus
from backend.tasks.queue import JOB_FUNCTION
from backend.tasks.registry import REGISTRY, TaskCanceled, TaskContext, TaskError, TaskSpec

log = structlog.get_logger(__name__)
MAX_ERROR_LENGTH = 1000
# Cloud Run gives a stopping container 10 s after SIGTERM: finish or hand back jobs before then.
SHUTDOWN_GRACE_SECONDS = 7


class RetryLater(Exception):
    """Raised to saq so it re-queues the job with backoff; the row already says queued."""


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
    def __init__(self, resources: Resources, job: Job | None) -> None:
        self.resources = resources
        self.job = job

    @contextlib.asynccontextmanager
    async def _row(self, task_id: uuid.UUID) -> AsyncIterator[tuple[AsyncSession, Task | None]]:
        """A short transaction on the row, committed (and its event published) on exit."""
        async with self.resources.db.sessionmaker() as session:
            task = await session.scalar(select(Task).where(Task.id == task_id).with_for_update())
            yield session, task
            await commit(session)
            if task is not None:
                await events.publish(self.resources.redis, task)

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

    async def _ticker(self, task_id: uuid.UUID, spec: TaskSpec) -> None:
        # Liveness independent of the handler's progress calls: a long OpenCV step in a thread
        # must not look like a dead worker. The timeout, not the lease, bounds a hung handler.
        while True:
            await asyncio.sleep(spec.heartbeat / 2)
            try:
                async with self.resources.db.sessionmaker() as session:
                    await session.execute(
                        update(Task)
                        .where(Task.id == task_id, Task.status == TaskStatus.running)
                        .values(deadline_at=utcnow() + timedelta(seconds=spec.lease))
                    )
                    await session.commit()
            except Exception as exc:  # noqa: BLE001 - a missed beat only shortens the lease
                log.warning("lease_renewal_failed", task_id=str(task_id), error=str(exc))
            await self._heartbeat()

    async def _claim(self, task_id: uuid.UUID) -> tuple[Task, TaskSpec] | None:
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

    async def progress(self, task_id: uuid.UUID, pct: int, message: str | None = None) -> None:
        pct = max(0, min(100, int(pct)))
        async with self._row(task_id) as (_, task):
            if task is None or task.cancel_requested or task.status != TaskStatus.running:
                raise TaskCanceled()
            # Monotonic: a retried attempt re-reporting early steps never moves the bar back.
            task.progress = max(task.progress, pct)
            spec = REGISTRY.get(task.kind)
            if spec is not None:
                task.deadline_at = utcnow() + timedelta(seconds=spec.lease)
            if message is not None:
                task.message = message[:200]
        await self._heartbeat(pct)

    async def run(self, task_id: uuid.UUID) -> dict[str, Any] | None:
        claimed = await self._claim(task_id)
        if claimed is None:
            return None
        task, spec = claimed
        log.info("task_started", task_id=str(task_id), kind=task.kind, attempt=task.attempts)
        started = time.perf_counter()

        async def report(pct: int, message: str | None = None) -> None:
            await self.progress(task_id, pct, message)

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
        ticker = asyncio.create_task(self._ticker(task_id, spec))
        try:
            async with asyncio.timeout(spec.timeout):
                result = await spec.handler(context)
        except TaskCanceled:
            await self._end(task_id, TaskStatus.canceled, message="canceled")
            return None
        except TimeoutError:
            await self._failed(
                task_id, spec, f"timed out after {spec.timeout:g} s", "task.timeout", True
            )
            return None
        except TaskError as exc:
            await self._failed(task_id, spec, _error_text(exc), exc.code, exc.retry)
            return None
        except asyncio.CancelledError:
            # Worker shutdown or a lost job: hand the row back so it runs again elsewhere.
            await asyncio.shield(self._release(task_id))
            raise
        except Exception as exc:
            log.exception("task_raised", task_id=str(task_id), kind=spec.kind)
            error = f"{type(exc).__name__}: {_error_text(exc)}"
            await self._failed(task_id, spec, error, "task.error", True)
            return None
        finally:
            ticker.cancel()
        await self._end(task_id, TaskStatus.succeeded, result=result, message="done")
        log.info(
            "task_succeeded",
            task_id=str(task_id),
            kind=spec.kind,
            seconds=round(time.perf_counter() - started, 3),
        )
        return result

    async def _end(self, task_id: uuid.UUID, status: TaskStatus, **fields: Any) -> None:
        async with self._row(task_id) as (_, task):
            if task is not None and not task.status.finished:
                self._finish(task, status, **fields)

    async def _failed(
        self, task_id: uuid.UUID, spec: TaskSpec, error: str, code: str, retry: bool
    ) -> None:
        async with self._row(task_id) as (_, task):
            if task is None or task.status.finished:
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

    async def _release(self, task_id: uuid.UUID) -> None:
        try:
            async with self._row(task_id) as (_, task):
                if task is not None and task.status == TaskStatus.running:
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


async def run_task(ctx: WorkerContext, *, task_id: str) -> dict[str, Any] | None:
    return await TaskRunner(ctx["resources"], ctx.get("job")).run(uuid.UUID(task_id))


def build_worker(resources: Resources, *, handle_signals: bool = True) -> Worker[WorkerContext]:
    settings = resources.settings
    load_task_modules(settings.task_modules)

    async def startup(ctx: WorkerContext) -> None:
        ctx["resources"] = resources
        ctx["sweeper"] = asyncio.create_task(sweeper.run_forever(resources))

    async def shutdown(ctx: WorkerContext) -> None:
        task = ctx.get("sweeper")
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

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


async def serve_worker(resources: Resources) -> None:
    """``atelier worker``: run until SIGTERM/SIGINT, then finish or hand back running jobs."""
    worker = build_worker(resources)
    log.info(
        "worker_starting", concurrency=resources.settings.worker_concurrency, kinds=sorted(REGISTRY)
    )
    try:
        await worker.start()
    finally:
        await resources.close()
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
