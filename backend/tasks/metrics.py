"""Task metrics as counters kept in Redis, updated as tasks change.

Every status change of a task row is published as an event (``backend.tasks.events``), from
whichever process made it: the API (created, canceled), a worker (running, finished, retried)
or the sweeper. ``record`` turns those into counters in Redis, so any API instance reports the
whole system at scrape time with three hash reads and one list length, without workers exposing
ports of their own and without touching the tasks table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from redis.asyncio.client import Pipeline

from backend.tasks.deps import task_queue
from backend.tasks.models import Task

if TYPE_CHECKING:
    from backend.core.resources import Resources

log = structlog.get_logger(__name__)

_PREFIX = "atelier:metrics:"
ENTERED_KEY = _PREFIX + "task_entered"  # hash "kind status" → times a task entered the status
SECONDS_KEY = _PREFIX + "task_seconds"  # hash "kind status" → summed last-attempt run time
FINISHED_KEY = _PREFIX + "task_finished"  # hash "kind status" → finished tasks with a run time
# The last status seen per task, to tell a change from a progress update of the same status.
LAST_STATUS_TTL_SECONDS = 24 * 3600

# One round trip per event; counts only when the status differs from the last one seen.
_RECORD = """
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
if old == ARGV[1] then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
if ARGV[3] ~= '' then
    redis.call('HINCRBYFLOAT', KEYS[3], ARGV[2], ARGV[3])
    redis.call('HINCRBY', KEYS[4], ARGV[2], 1)
end
return 1
"""


def record(pipe: Pipeline, task: Task) -> None:
    """Queue on ``pipe``: count the task's status if it changed since the last event about it.

    Sent with the task's event (``backend.tasks.events.publish``), in the same round trip.
    """
    status = task.status.value
    seconds = ""
    if task.status.finished and task.started_at is not None and task.finished_at is not None:
        seconds = repr(max(0.0, (task.finished_at - task.started_at).total_seconds()))
    pipe.eval(
        _RECORD,
        4,
        f"{_PREFIX}last:{task.id}",
        ENTERED_KEY,
        SECONDS_KEY,
        FINISHED_KEY,
        status,
        f"{task.kind} {status}",
        seconds,
        LAST_STATUS_TTL_SECONDS,
    )


def _labels(field_name: bytes | str) -> list[str]:
    text = field_name.decode() if isinstance(field_name, bytes) else field_name
    kind, _, status = text.rpartition(" ")
    return [kind, status]


@dataclass
class _Snapshot:
    entered: dict[bytes, bytes] = field(default_factory=dict)
    seconds: dict[bytes, bytes] = field(default_factory=dict)
    finished: dict[bytes, bytes] = field(default_factory=dict)
    queue_depth: int | None = None


class TaskCollector(Collector):
    """Renders the last snapshot read from Redis (``refresh`` runs just before each scrape)."""

    def __init__(self) -> None:
        self.snapshot = _Snapshot()

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        entered = CounterMetricFamily(
            "atelier_tasks",
            "Times a task entered a status (queued, running, succeeded, failed, canceled)",
            labels=["kind", "status"],
        )
        for name, value in sorted(snap.entered.items()):
            entered.add_metric(_labels(name), float(value))
        yield entered
        duration = SummaryMetricFamily(
            "atelier_task_duration_seconds",
            "Run time (last start to finish) of finished tasks by kind and final status",
            labels=["kind", "status"],
        )
        for name, count in sorted(snap.finished.items()):
            total = float(snap.seconds.get(name, b"0"))
            duration.add_metric(_labels(name), count_value=int(count), sum_value=total)
        yield duration
        if snap.queue_depth is not None:
            yield GaugeMetricFamily(
                "atelier_queue_depth", "Jobs waiting in the task queue", value=snap.queue_depth
            )


COLLECTOR = TaskCollector()
REGISTRY.register(COLLECTOR)


async def refresh(resources: Resources) -> None:
    redis = resources.redis
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(ENTERED_KEY)
            pipe.hgetall(SECONDS_KEY)
            pipe.hgetall(FINISHED_KEY)
            entered, seconds, finished = await pipe.execute()
        depth = await task_queue(resources).depth()
        COLLECTOR.snapshot = _Snapshot(entered, seconds, finished, depth)
    except Exception as exc:  # noqa: BLE001 - a scrape must answer even when Redis is down
        log.warning("task_metrics_failed", error=str(exc))
        COLLECTOR.snapshot = _Snapshot()
