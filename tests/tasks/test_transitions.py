"""The runner's one-statement claim and finish, on real Postgres: the same outcomes as the
locked read-modify-write they replace, and jobs queued before jobs carried their kind."""

from __future__ import annotations

from datetime import timedelta

from saq import Job
from sqlalchemy import text, update

from backend.composition import AppResources
from backend.core.db import utcnow
from backend.tasks.models import Task, TaskStatus
from backend.tasks.queue import JOB_FUNCTION
from backend.tasks.rows import TransitionStore
from backend.tasks.worker import TaskRunner, running_worker
from tests.tasks.conftest import CreateTask, load, wait_status


async def set_row(resources: AppResources, task_id: object, **values: object) -> None:
    async with resources.db.sessionmaker() as session:
        await session.execute(update(Task).where(Task.id == task_id).values(**values))
        await session.commit()


async def test_claim_counts_attempts_and_refuses_a_live_lease(
    resources: AppResources, create_task: CreateTask
) -> None:
    task_id = await create_task("test.steps", steps=1)
    runner = TaskRunner(resources, None)
    claimed = await runner._claim(task_id, "test.steps")
    assert claimed is not None
    task, spec = claimed
    assert (task.status, task.attempts, task.message) == (TaskStatus.running, 1, "started")
    assert task.deadline_at is not None
    assert task.started_at is not None
    assert abs((task.deadline_at - task.started_at).total_seconds() - spec.lease) < 0.01
    # A duplicate delivery while the lease is live: neither path takes it.
    assert await runner._claim(task_id, "test.steps") is None
    assert (await load(resources, task_id)).attempts == 1
    # Once the lease has expired, the next claim is attempt 2.
    await set_row(resources, task_id, deadline_at=utcnow() - timedelta(seconds=1))
    again = await runner._claim(task_id, "test.steps")
    assert again is not None
    assert (again[0].attempts, again[0].message) == (2, "attempt 2")


async def test_claim_of_a_canceled_or_mismatched_row_takes_the_full_path(
    resources: AppResources, create_task: CreateTask
) -> None:
    runner = TaskRunner(resources, None)
    canceled = await create_task("test.steps", steps=1)
    await set_row(resources, canceled, cancel_requested=True)
    assert await runner._claim(canceled, "test.steps") is None
    assert (await load(resources, canceled)).status == TaskStatus.canceled
    # A job naming another kind than the row's: the row decides.
    other = await create_task("test.steps", steps=1)
    claimed = await runner._claim(other, "test.noop")
    assert claimed is not None
    assert claimed[1].kind == "test.steps"


async def test_finish_leaves_a_newer_attempts_row_alone(
    resources: AppResources, create_task: CreateTask
) -> None:
    task_id = await create_task("test.steps", steps=1)
    runner = TaskRunner(resources, None)
    claimed = await runner._claim(task_id, "test.steps")
    assert claimed is not None
    await set_row(resources, task_id, attempts=2)
    await runner._end(task_id, 1, TaskStatus.succeeded, message="done", result={"x": 1})
    row = await load(resources, task_id)
    assert (row.status, row.result) == (TaskStatus.running, None)
    await runner._end(task_id, 2, TaskStatus.succeeded, message="done", result={"x": 1})
    row = await load(resources, task_id)
    assert (row.status, row.result, row.progress) == (TaskStatus.succeeded, {"x": 1}, 100)
    assert row.deadline_at is None
    assert row.finished_at is not None


async def test_a_job_queued_without_its_kind_still_runs(
    resources: AppResources, create_task: CreateTask
) -> None:
    task_id = await create_task("test.steps", steps=1)
    # Drop the job the create queued and queue one the way older code did: no kind.
    await resources.queue.drop_stale_job(task_id)
    old = resources.queue.job_for(task_id, "test.steps")
    job = Job(
        function=JOB_FUNCTION,
        kwargs={"task_id": str(task_id)},
        key=str(task_id),
        timeout=old.timeout,
        retries=old.retries,
        ttl=old.ttl,
    )
    assert await resources.queue.saq.enqueue(job) is not None
    async with running_worker(resources):
        task = await wait_status(resources, task_id, TaskStatus.succeeded, TaskStatus.failed)
    assert (task.status, task.attempts) == (TaskStatus.succeeded, 1)


async def test_a_transition_survives_its_pooled_connection_being_dropped(
    resources: AppResources, create_task: CreateTask
) -> None:
    # The worker's transition pool does not ping: a connection Postgres dropped (a restart)
    # must cost one retry, not a failed claim.
    store = TransitionStore(resources.db, size=2)
    try:
        runner = TaskRunner(resources, None, store)
        first = await create_task("test.steps", steps=1)
        assert await runner._claim(first, "test.steps") is not None
        async with store.sessionmaker() as session:
            pid = await session.scalar(text("SELECT pg_backend_pid()"))
        async with resources.db.sessionmaker() as session:
            assert await session.scalar(text(f"SELECT pg_terminate_backend({int(pid)})"))
        second = await create_task("test.steps", steps=1)
        claimed = await runner._claim(second, "test.steps")
        assert claimed is not None
        assert claimed[0].status == TaskStatus.running
    finally:
        await store.dispose()
