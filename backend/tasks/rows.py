"""Where the worker writes its status transitions: one statement each, without a transaction.

A claim and a finish are each a single conditional ``UPDATE … RETURNING`` (atomic on its own),
so on Postgres they run on a small autocommit pool of the worker's own. On the shared pool each
would cost five more round trips: the pre-ping there opens and rolls back a transaction of its
own (pgbouncer-safe), then BEGIN and COMMIT. With autocommit the ping is one round trip and the
UPDATE another. SQLite (embedded mode) and databases bound to a test's connection use the
shared session factory as before.
"""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from backend.core.db import CONNECT_TIMEOUT_SECONDS, POOL_TIMEOUT_SECONDS, Database


class TransitionStore:
    def __init__(self, db: Database, *, size: int) -> None:
        self._engine: AsyncEngine | None = None
        self.sessionmaker: async_sessionmaker[AsyncSession] = db.sessionmaker
        url = make_url(db.url)
        owns_engine = isinstance(db.sessionmaker.kw.get("bind"), AsyncEngine)
        if owns_engine and url.get_driver_name() == "asyncpg":
            self._engine = create_async_engine(
                db.url,
                isolation_level="AUTOCOMMIT",
                pool_size=max(1, size // 2),
                max_overflow=size,
                pool_pre_ping=True,
                pool_timeout=POOL_TIMEOUT_SECONDS,
                connect_args={"timeout": CONNECT_TIMEOUT_SECONDS},
            )
            self.sessionmaker = async_sessionmaker(self._engine, expire_on_commit=False)

    async def dispose(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
