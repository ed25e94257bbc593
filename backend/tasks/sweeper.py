"""The sweeper: rows are the truth, so it repairs whatever Redis lost.

Periodically (in every worker; a Redis lock lets one of them act per round) it looks at active
rows past their deadline: a queued row with no pending job (Redis flushed or restarted, enqueue
failed) is enqueued again; a running row whose lease expired (its worker was killed, or froze)
is re-queued (at the front of the queue) while it has attempts left and failed for good after
that. Running rows renew their lease every half heartbeat, so recovery takes about three
heartbeats (6 s by default) plus one round (2 s).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from saq.job import Status
from sqlalchemy import select

from backend.core.db import Callback, commit, on_commit, utcnow
from backend.core.resources import Resources
from backend.tasks import events
from backend.tasks.deps import task_queue
from backend.tasks.models import ACTIVE_STATUSES, Task, TaskStatus

log = structlog.get_logger(__name__)
LOCK_KEY = "atelier:sweeper:lock"
BATCH = 200


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    deferred: int = 0


async def sweep_once(resources: Resources) -> SweepReport:
    report = SweepReport()
    queue = task_queue(resources)
    grace = timedelta(seconds=queue.queue_grace)
    now = utcnow()
    async with resources.db.sessionmaker() as session:
        rows = list(
            await session.scalars(
                select(Task)
                .where(Task.status.in_(ACTIVE_STATUSES), Task.deadline_at < now)
                .order_by(Task.deadline_at)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            )
        )
        changed: list[Task] = []
        for task in rows:
            job_status = await queue.job_status(task.id)
            if task.status == TaskStatus.queued and job_status in (Status.NEW, Status.QUEUED):
                # Waiting in line behind other work: look again later.
                task.deadline_at = now + grace
                report.deferred += 1
                continue
            if job_status is not None:
                # A running row whose lease ran out (its worker died or froze), or a queued row
                # whose job a dead worker had taken: what saq holds is stale. Finishing it
                # frees the key for a fresh enqueue; a worker that is in fact alive finds the
                # row leased or finished and does nothing.
                await queue.drop_stale_job(task.id)
            changed.append(task)
            if task.cancel_requested:
                task.status, task.finished_at, task.message = TaskStatus.canceled, now, "canceled"
                task.deadline_at = None
                report.canceled.append(str(task.id))
            elif task.status == TaskStatus.running and task.attempts >= task.max_attempts:
                task.status, task.finished_at, task.deadline_at = TaskStatus.failed, now, None
                task.error = "The worker running this task stopped and no attempts are left."
                task.error_code, task.message = "task.lost", "failed"
                report.failed.append(str(task.id))
            else:
                if task.status == TaskStatus.running:
                    task.message = "recovered after its worker stopped"
                task.status = TaskStatus.queued
                task.deadline_at = now + grace
                report.requeued.append(str(task.id))
                on_commit(session, _enqueuer(resources, task))
        await commit(session)
    for task in changed:
        await events.publish(resources.redis, task)
    if report.requeued or report.failed or report.canceled:
        log.info("sweep", requeued=report.requeued, failed=report.failed, canceled=report.canceled)
    return report


def _enqueuer(resources: Resources, task: Task) -> Callback:
    task_id, kind = task.id, task.kind

    async def enqueue() -> None:
        # At the front: recovered work has waited its turn once already.
        await task_queue(resources).enqueue_front(task_id, kind)

    return enqueue


# Other features' periodic clean-ups (abandoned uploads…), run after each round's sweep by the
# worker that holds the round's lock, so one instance does them. Each returns how many things
# it removed.
Chore = Callable[[Resources], Awaitable[int]]
_chores: list[Chore] = []


def register_chore(chore: Chore) -> None:
    if chore not in _chores:
        _chores.append(chore)


async def run_chores(resources: Resources) -> dict[str, int]:
    """Each registered chore once; one that fails is logged and the others still run."""
    done: dict[str, int] = {}
    for chore in list(_chores):
        name = getattr(chore, "__qualname__", repr(chore))
        try:
            done[name] = await chore(resources)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - storage or the database may be down; next round
            log.exception("chore_failed", chore=name)
    return done


async def run_forever(resources: Resources, stop: asyncio.Event | None = None) -> None:
    """Sweep every interval until ``stop`` is set (or, less reliably, until cancelled: a Redis
    command in flight can swallow the cancellation, so shutdown sets the flag as well)."""
    interval = resources.settings.sweep_interval_seconds
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            # One sweeper per round across all workers; the lock expires with the interval.
            if await resources.redis.set(LOCK_KEY, b"1", nx=True, px=int(interval * 900)):
                await sweep_once(resources)
                await run_chores(resources)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - Redis or the database may be down; try next round
            log.exception("sweep_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
