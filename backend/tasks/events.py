"""Task events on Redis pub/sub: one channel, each message tagged with the owner.

Every API instance holds a single subscription to the channel and routes messages to the
sockets of the owner only (see ``backend.realtime.hub``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from backend.tasks import metrics
from backend.tasks.models import Task
from backend.tasks.schemas import TaskOut

CHANNEL = "atelier:task-events"
log = structlog.get_logger(__name__)


def task_json(task: Task) -> dict[str, Any]:
    return TaskOut.model_validate(task).model_dump(mode="json")


def cursor_for(moment: datetime) -> str:
    """The resume cursor of a point in time, for ``/ws?since=``: opaque to clients."""
    return str(int(moment.timestamp() * 1_000_000))


def parse_cursor(raw: str | None) -> datetime | None:
    """The point in time a cursor names, or None for a missing or malformed one."""
    if raw is None or not raw.isdigit() or len(raw) > 19:
        return None
    try:
        return datetime.fromtimestamp(int(raw) / 1_000_000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def encode_event(task: Task) -> str:
    # The task is serialized by pydantic straight to JSON text (a third of the cost of a dict
    # then json.dumps); the envelope around it holds only a UUID and digits.
    body = TaskOut.model_validate(task).model_dump_json()
    cursor = cursor_for(task.updated_at)
    return (
        f'{{"user_id":"{task.user_id}","event":'
        f'{{"type":"task.updated","task":{body},"cursor":"{cursor}"}}}}'
    )


def decode_event(raw: bytes | str) -> tuple[uuid.UUID, dict[str, Any]]:
    """(owner, message for the socket); raises ValueError on anything malformed."""
    data = json.loads(raw)
    return uuid.UUID(data["user_id"]), dict(data["event"])


def stage(pipe: Pipeline, task: Task, prior: Task | None = None) -> None:
    """Queue on ``pipe`` the task's event and the status counters behind /metrics; ``prior``
    is an earlier state of the task that was never announced, counted first."""
    if prior is not None:
        metrics.record(pipe, prior)
    metrics.record(pipe, task)
    pipe.publish(CHANNEL, encode_event(task))


async def publish(
    redis: Redis,
    task: Task,
    also: Callable[[Pipeline], None] | None = None,
    *,
    prior: Task | None = None,
) -> bool:
    """Send the task's event, with whatever ``also`` queues in the same round trip (then in
    one MULTI, all or nothing); False when Redis failed."""
    # The row is already committed and is the truth; a lost event is repaired by the next
    # snapshot, so a Redis hiccup must not fail the work itself.
    try:
        async with redis.pipeline(transaction=also is not None) as pipe:
            stage(pipe, task, prior)
            if also is not None:
                also(pipe)
            await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("task_event_publish_failed", task_id=str(task.id), error=str(exc))
        return False
    return True
