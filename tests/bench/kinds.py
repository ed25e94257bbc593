"""The task kind the event-latency benchmark runs in a real ``atelier worker`` process.

Imported by the benchmark (to create its rows) and by the worker via ``ATELIER_TASK_MODULES``.
"""

from __future__ import annotations

import time
from typing import Any

from backend.tasks.registry import TaskContext, TaskError, task

PROGRESS_KIND = "bench.progress"
# The prefix of every progress message; the rest is ``i=<event> t=<time.time_ns() at the call>``.
MESSAGE_PREFIX = "bench "


def progress_message(index: int, sent_ns: int) -> str:
    return f"{MESSAGE_PREFIX}i={index} t={sent_ns}"


def parse_progress_message(message: str | None) -> tuple[int, int] | None:
    """(event index, send time in ns) from a message of this kind, else None."""
    if not message or not message.startswith(MESSAGE_PREFIX):
        return None
    fields = dict(part.split("=", 1) for part in message[len(MESSAGE_PREFIX) :].split())
    return int(fields["i"]), int(fields["t"])


@task(PROGRESS_KIND, timeout=600, max_attempts=1, heartbeat=30)
async def progress_events(ctx: TaskContext) -> dict[str, Any]:
    """``events`` progress reports, each sent once the previous one has been acknowledged.

    The benchmark's clients push to ``ack_key`` when every socket has received an event, so
    each event is measured alone (closed loop) rather than queued behind the previous one.
    """
    events = int(ctx.payload["events"])
    ack_key = str(ctx.payload["ack_key"])
    ack_timeout = float(ctx.payload.get("ack_timeout", 30))
    redis = ctx.resources.redis
    for index in range(events):
        # progress() is monotonic in pct but publishes on every call: the message makes each
        # event distinct and carries the moment of the call.
        await ctx.progress(index * 100 // events, progress_message(index, time.time_ns()))
        if await redis.blpop([ack_key], timeout=ack_timeout) is None:
            raise TaskError(f"event {index} was not acknowledged", code="bench.no_ack", retry=False)
    return {"events": events}
