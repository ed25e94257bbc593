"""The saq queue on Redis, and enqueueing strictly after the task row has committed.

Job key = task id: saq refuses a second job with the same key while the first is unfinished,
so enqueueing twice (a retried request, the sweeper racing a slow commit) runs the task once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from saq import Job
from saq.job import Status
from saq.queue.redis import RedisQueue
from saq.utils import now

from backend.tasks.registry import spec_for

QUEUE_NAME = "atelier"
JOB_FUNCTION = "run_task"
# Added to a kind's own timeout for saq's backstop: our runner enforces the real one first and
# records it on the row, saq's only catches a runner that is itself stuck.
SAQ_TIMEOUT_MARGIN = 10
# Finished job records are kept briefly for debugging; the row is the lasting record.
JOB_TTL_SECONDS = 3600
_PENDING = frozenset({Status.NEW, Status.QUEUED, Status.ACTIVE, Status.ABORTING})
# Set on a saq job whose completion the runner already wrote with the task's final event.
_FINISHED_EARLY = "_atelier_finished_early"


class RowsFirstQueue(RedisQueue):
    """saq's queue without saq's own sweep.

    saq's sweep aborts any job it finds in the active list whose status is not yet "active",
    and a job is exactly that between being dequeued and being marked (saq issue #277): at
    every worker start it aborted and re-ran jobs that were fine. Lost and stuck work is
    recovered by our sweeper from the rows' leases instead (``backend.tasks.sweeper``).
    """

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:  # noqa: ARG002
        return []

    async def notify(self, job: Job) -> None:  # noqa: ARG002
        # saq publishes every job change (twice per run) for ``apply``/``map`` and job waiters;
        # nothing here waits on a job (the row and its events are what people watch).
        return None

    async def _update(self, job: Job, status: Status | None = None, **kwargs: Any) -> None:
        if status == Status.ACTIVE:
            # saq marks each job it takes, one round trip per job that nothing here reads: the
            # row's claim says running, and ``job_state`` tells a taken job from a waiting one
            # by the active list it was moved to atomically when it was taken.
            return None
        await super()._update(job, status, **kwargs)

    def stage_finish(self, pipe: Pipeline, job: Job, result: Any) -> None:
        """Queue on ``pipe`` what saq's ``finish(COMPLETE)`` writes, so that the worker sends it
        with the task's final event; ``finished_early`` then tells saq's own call to skip it."""
        job.status = Status.COMPLETE
        job.result = result
        job.error = None
        job.completed = now()
        job.progress = 1.0
        pipe.lrem(self._active, 1, job.id)
        pipe.zrem(self._incomplete, job.id)
        if job.ttl > 0:
            pipe.setex(job.id, job.ttl, self.serialize(job))
        elif job.ttl == 0:
            pipe.set(job.id, self.serialize(job))
        else:
            pipe.delete(job.id)

    @staticmethod
    def finished_early(job: Job) -> None:
        setattr(job, _FINISHED_EARLY, True)

    async def _finish(
        self,
        job: Job,
        status: Status,
        *,
        result: Any = None,
        error: str | None = None,
    ) -> None:
        if status == Status.COMPLETE and getattr(job, _FINISHED_EARLY, False):
            return None
        await super()._finish(job, status, result=result, error=error)

    async def job_state(self, job_key: str) -> Status | None:
        """The job's status, ACTIVE for one a worker has taken (it sits in the active list),
        None when Redis holds no job for the key."""
        job_id = self.job_id(job_key)
        async with self._op_sem, self.redis.pipeline(transaction=False) as pipe:
            pipe.get(job_id)
            pipe.lpos(self._active, job_id)
            raw, taken = await pipe.execute()
        job = self.deserialize(raw)
        if job is None:
            return None
        if taken is not None and job.status in (Status.NEW, Status.QUEUED):
            return Status.ACTIVE
        return job.status

    # A waiting job and its record in one round trip; saq's dequeue takes two (BLMOVE, GET).
    _TAKE_SCRIPT = """
        local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
        if not id then return nil end
        return {id, redis.call('GET', id)}
    """

    # Set once a take found the queue empty: until a blocking take sees work waiting behind the
    # job it got, takes block at once rather than first trying (and missing) without blocking.
    _drained = False

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:
        # While work is waiting (when throughput matters) no blocking wait is needed; an empty
        # queue falls back to a blocking take. LMOVE needs Redis 6.2, as BLMOVE does.
        if await self.version() < (6, 2, 0):
            return await super().dequeue(timeout, poll_interval)
        if not self._drained:
            async with self._op_sem:
                taken = await self.redis.eval(self._TAKE_SCRIPT, 2, self._queued, self._active)
            if taken:
                return self.deserialize(taken[1])
            self._drained = True
        job_id = await self.redis.blmove(
            self._queued,
            self._active,
            timeout,  # type: ignore[arg-type]  # Redis takes fractional seconds
            "LEFT",
            "RIGHT",
        )
        if job_id is None:
            return None
        async with self._op_sem, self.redis.pipeline(transaction=False) as pipe:
            pipe.get(job_id)
            pipe.llen(self._queued)
            raw, waiting = await pipe.execute()
        self._drained = not waiting
        return self.deserialize(raw)

    # saq's enqueue script, but LPUSH: workers take from the left, so this job runs next.
    _FRONT_SCRIPT = """
        if not redis.call('ZSCORE', KEYS[1], KEYS[2]) and redis.call('EXISTS', KEYS[4]) == 0 then
            redis.call('SET', KEYS[2], ARGV[1])
            redis.call('ZADD', KEYS[1], ARGV[2], KEYS[2])
            redis.call('LPUSH', KEYS[3], KEYS[2])
            return 1
        else
            return nil
        end
    """

    async def enqueue_front(self, job: Job) -> bool:
        """Queue ``job`` ahead of everything waiting (same key dedupe as ``enqueue``)."""
        return await self._run_enqueue(self._FRONT_SCRIPT, job, None)

    # saq's enqueue script (a job due now goes to the back of the line).
    _BACK_SCRIPT = """
        if not redis.call('ZSCORE', KEYS[1], KEYS[2]) and redis.call('EXISTS', KEYS[4]) == 0 then
            redis.call('SET', KEYS[2], ARGV[1])
            redis.call('ZADD', KEYS[1], ARGV[2], KEYS[2])
            if ARGV[2] == '0' then redis.call('RPUSH', KEYS[3], KEYS[2]) end
            return 1
        else
            return nil
        end
    """

    async def enqueue_with(self, job: Job, also: Callable[[Pipeline], None]) -> bool:
        """``enqueue``, with whatever ``also`` queues on the same pipeline (the task's event):
        one round trip for both."""
        return await self._run_enqueue(self._BACK_SCRIPT, job, also)

    async def _run_enqueue(
        self, script: str, job: Job, also: Callable[[Pipeline], None] | None
    ) -> bool:
        job.queue = self
        job.status = Status.QUEUED
        job.queued = now()
        keys = [self._incomplete, job.id, self._queued, job.abort_id]
        async with self._op_sem, self.redis.pipeline(transaction=False) as pipe:
            pipe.eval(script, len(keys), *keys, self.serialize(job), job.scheduled)
            if also is not None:
                also(pipe)
            queued, *_ = await pipe.execute()
        return bool(queued)


class _EmbeddedQueue(RowsFirstQueue):
    """The in-process queue of embedded mode, on fakeredis.

    fakeredis answers a blocking ``BLMOVE`` at once, so saq's dequeue loops would spin a core
    while idle. Here a dequeue takes a job without blocking and otherwise sleeps until this
    process queues one (enqueue, retry, or a scheduled job coming due), or the timeout passes.
    With fakeredis nothing outside this process can queue a job, so no wake-up is missed; the
    timeout bounds any that were.
    """

    def __init__(self, redis: Redis, *, name: str) -> None:
        super().__init__(redis, name=name)
        # fakeredis has no INFO, which saq reads once to pick BLMOVE over BRPOPLPUSH.
        self._version = (7, 4, 0)
        self._wake = asyncio.Event()

    def _notify_waiters(self) -> None:
        # Waiters hold the old event, now set; later ones wait on a fresh one.
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:  # noqa: ARG002
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            wake = self._wake
            job_id = await self.redis.lmove(self._queued, self._active, "LEFT", "RIGHT")
            if job_id is not None:
                return await self._get_job_by_id(job_id)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(wake.wait(), remaining)
            except TimeoutError:
                return None

    async def _enqueue(self, job: Job) -> Job | None:
        queued = await super()._enqueue(job)
        if queued is not None:
            self._notify_waiters()
        return queued

    async def enqueue_front(self, job: Job) -> bool:
        queued = await super().enqueue_front(job)
        if queued:
            self._notify_waiters()
        return queued

    async def enqueue_with(self, job: Job, also: Callable[[Pipeline], None]) -> bool:
        queued = await super().enqueue_with(job, also)
        if queued:
            self._notify_waiters()
        return queued

    async def _retry(self, job: Job, error: str | None) -> None:
        await super()._retry(job, error)
        self._notify_waiters()

    async def schedule(self, lock: int = 1) -> list[str]:
        due = await super().schedule(lock)
        if due:
            self._notify_waiters()
        return due


class TaskQueue:
    def __init__(
        self,
        redis: Redis,
        *,
        embedded: bool = False,
        name: str = QUEUE_NAME,
        queue_grace: float = 30.0,
    ) -> None:
        self.saq: RowsFirstQueue = (
            _EmbeddedQueue(redis, name=name) if embedded else RowsFirstQueue(redis, name=name)
        )
        # How long a queued row may wait for its job to start before the sweeper checks on it.
        self.queue_grace = queue_grace

    def job_for(self, task_id: uuid.UUID, kind: str) -> Job:
        spec = spec_for(kind)
        return Job(
            function=JOB_FUNCTION,
            kwargs={"task_id": str(task_id), "kind": kind},
            key=str(task_id),
            timeout=int(spec.timeout) + SAQ_TIMEOUT_MARGIN,
            # Dead-worker recovery is the sweeper's, from the lease on the row: two recovery
            # paths (saq's heartbeat sweep and ours) could deliver the same task twice.
            heartbeat=0,
            retries=spec.max_attempts,
            retry_delay=spec.retry_delay,
            retry_backoff=max(spec.retry_delay * 30, 60.0),
            ttl=JOB_TTL_SECONDS,
        )

    async def enqueue(self, task_id: uuid.UUID, kind: str) -> bool:
        """True when a job was queued, False when one for this task is already pending."""
        return await self.saq.enqueue(self.job_for(task_id, kind)) is not None

    async def enqueue_with(
        self, task_id: uuid.UUID, kind: str, also: Callable[[Pipeline], None]
    ) -> bool:
        """Like ``enqueue``, sending what ``also`` queues on the pipeline in the same round
        trip (the task's event: Redis must then be the one the events go to)."""
        return await self.saq.enqueue_with(self.job_for(task_id, kind), also)

    async def enqueue_front(self, task_id: uuid.UUID, kind: str) -> bool:
        """Like ``enqueue``, but ahead of all waiting work: for recovered tasks, which have
        already waited their turn once and should not wait behind a whole new backlog."""
        return await self.saq.enqueue_front(self.job_for(task_id, kind))

    async def job_status(self, task_id: uuid.UUID) -> Status | None:
        """saq's status of the task's job (ACTIVE once a worker took it), or None when Redis
        holds none."""
        return await self.saq.job_state(str(task_id))

    async def drop_stale_job(self, task_id: uuid.UUID) -> None:
        """Finish a job whose worker died, so the task's key can be enqueued afresh."""
        job = await self.saq.job(str(task_id))
        if job is not None and job.status in _PENDING:
            await self.saq.finish(job, Status.ABORTED, error="worker lost")

    async def depth(self) -> int:
        return int(await self.saq.count("queued"))
