"""Where the worker writes its status transitions: one statement each, without a transaction.

A claim and a finish are each a single conditional ``UPDATE … RETURNING`` (atomic on its own),
so on Postgres they run on a small autocommit pool of the worker's own: one round trip each.
On the shared pool each would cost six: the pre-ping there opens and rolls back a transaction
of its own (pgbouncer-safe), then BEGIN and COMMIT. This pool does not ping; a connection the
server dropped fails its statement before anything ran, the pool then discards all its older
connections, and the runner sends the statement once more (``RETRY_ON_DISCONNECT``). SQLite
(embedded mode) and databases bound to a test's connection use the shared session factory.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    String,
    Table,
    Update,
    and_,
    bindparam,
    case,
    cast,
    literal,
    or_,
    update,
)
from sqlalchemy.engine import Engine, Row, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util.concurrency import greenlet_spawn

from backend.core.db import CONNECT_TIMEOUT_SECONDS, POOL_TIMEOUT_SECONDS, Database
from backend.tasks.models import Task, TaskStatus

# How many times a transition is sent again after its connection turned out dead.
RETRY_ON_DISCONNECT = 1


def transition_pool(concurrency: int) -> tuple[int, int]:
    """(pool size, overflow) of a worker's own transition pool: infra/README.md's budget.

    Every running job may hold a connection at once, so all of them stay pooled: an overflow
    connection is closed when it comes back, and reconnecting (TLS context, startup) for one of
    every two transitions under load cost more worker CPU than the statements themselves."""
    return max(1, concurrency), max(1, concurrency // 2)


def _execute_one(engine: Engine, statement: Update, params: dict[str, Any]) -> Row[Any] | None:
    with engine.connect() as conn:
        return conn.execute(statement, params).one_or_none()


class TransitionStore:
    def __init__(self, db: Database, *, size: int, own_pool: bool = True) -> None:
        self._engine: AsyncEngine | None = None
        self.sessionmaker: async_sessionmaker[AsyncSession] = db.sessionmaker
        url = make_url(db.url)
        owns_engine = isinstance(db.sessionmaker.kw.get("bind"), AsyncEngine)
        if own_pool and owns_engine and url.get_driver_name() == "asyncpg":
            pool_size, max_overflow = transition_pool(size)
            self._engine = create_async_engine(
                db.url,
                isolation_level="AUTOCOMMIT",
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=POOL_TIMEOUT_SECONDS,
                connect_args={"timeout": CONNECT_TIMEOUT_SECONDS},
            )
            self.sessionmaker = async_sessionmaker(self._engine, expire_on_commit=False)

    @classmethod
    def shared(cls, db: Database) -> TransitionStore:
        """Transitions on the shared session factory (a runner made outside a worker)."""
        return cls(db, size=0, own_pool=False)

    async def execute(self, statement: Update, params: dict[str, Any]) -> Row[Any] | None:
        """Run one transition; its row as written, or None when the WHERE refused it."""
        if self._engine is not None:
            # Autocommit: no session, no transaction, one round trip. Checkout, statement and
            # check-in run in one pass through SQLAlchemy's greenlet: an AsyncConnection makes
            # a pass for each, and those cost a worker more CPU than the statement.
            return await greenlet_spawn(_execute_one, self._engine.sync_engine, statement, params)
        async with self.sessionmaker() as session:
            row = (await session.execute(statement, params)).one_or_none()
            await session.commit()
            return row

    async def dispose(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()


# The statements are built once, with bound parameters: building and cache-keying an ORM UPDATE
# per call cost more CPU than the rest of a transition. They return plain rows, which carry
# every column by name, like the ORM object they stand in for.
_TASKS: Table = Task.__table__  # type: ignore[assignment]
_c = _TASKS.c

# The common claim: a row of the job's kind, not canceled, queued or running on an expired lease.
CLAIM = (
    update(_TASKS)
    .where(
        _c.id == bindparam("p_id"),
        _c.kind == bindparam("p_kind"),
        _c.cancel_requested.is_(False),
        or_(
            _c.status == TaskStatus.queued,
            and_(
                _c.status == TaskStatus.running,
                or_(_c.deadline_at.is_(None), _c.deadline_at <= bindparam("p_now")),
            ),
        ),
    )
    .values(
        status=TaskStatus.running,
        attempts=_c.attempts + 1,
        started_at=bindparam("p_now"),
        message=case(
            (_c.attempts == 0, "started"),
            else_=literal("attempt ", String) + cast(_c.attempts + 1, String),
        ),
        deadline_at=bindparam("p_deadline"),
        updated_at=bindparam("p_now"),
    )
    .returning(*_c)
)


def _finish(**extra: Any) -> Update:
    # Only this attempt's own unfinished row (a row re-queued from this very attempt counts).
    return (
        update(_TASKS)
        .where(
            _c.id == bindparam("p_id"),
            _c.attempts == bindparam("p_attempt"),
            # Spelled out rather than IN: an IN list is re-expanded at every execution.
            or_(_c.status == TaskStatus.queued, _c.status == TaskStatus.running),
        )
        .values(
            status=bindparam("p_status"),
            finished_at=bindparam("p_now"),
            deadline_at=None,
            message=bindparam("p_message"),
            error=None,
            error_code=None,
            updated_at=bindparam("p_now"),
            **extra,
        )
        .returning(*_c)
    )


FINISH = _finish()
SUCCEED = _finish(progress=100, result=bindparam("p_result"))
