"""Task kinds and their handlers: ``@task("sketch", timeout=…)``.

A handler is an async function taking a ``TaskContext``; it reports progress with
``await ctx.progress(pct, message)``, which also heartbeats the job and is where a cancel
request stops it. It returns a JSON-able dict (the task's ``result``) or None. Handlers must be
idempotent: a task may run again after a crash, and must then store the same result, not a
second copy.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from backend.core.resources import Resources


class ProgressFn(Protocol):
    async def __call__(self, pct: int, message: str | None = None) -> None: ...


@dataclass
class TaskContext:
    task_id: uuid.UUID
    user_id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    attempt: int
    progress: ProgressFn
    resources: Resources
    links: dict[str, uuid.UUID | None] = field(default_factory=dict)


Handler = Callable[[TaskContext], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True)
class TaskSpec:
    kind: str
    handler: Handler
    timeout: float
    max_attempts: int
    retry_delay: float
    # Seconds between liveness beats of a running task; a row silent for ``lease`` seconds
    # belongs to a dead worker and is recovered by the sweeper.
    heartbeat: float

    @property
    def lease(self) -> float:
        return 3.0 * self.heartbeat


class TaskError(Exception):
    """A failure with a stable code. ``retry=False`` fails the task at once (bad input, say)."""

    def __init__(self, message: str, *, code: str = "task.error", retry: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.retry = retry


class TaskCanceled(Exception):
    pass


REGISTRY: dict[str, TaskSpec] = {}


def task(
    kind: str,
    *,
    timeout: float = 60,
    max_attempts: int = 3,
    retry_delay: float = 1.0,
    # Short, so a dead worker's task is recovered within seconds (lease = 3 heartbeats).
    heartbeat: float = 2,
) -> Callable[[Handler], Handler]:
    if max_attempts < 1 or timeout <= 0:
        raise ValueError("max_attempts must be ≥ 1 and timeout > 0")
    if len(kind) > 32:
        raise ValueError("task kinds are at most 32 characters")

    def register(handler: Handler) -> Handler:
        REGISTRY[kind] = TaskSpec(
            kind, handler, float(timeout), max_attempts, retry_delay, heartbeat
        )
        return handler

    return register


def spec_for(kind: str) -> TaskSpec:
    try:
        return REGISTRY[kind]
    except KeyError:
        raise LookupError(f"unknown task kind {kind!r}") from None
