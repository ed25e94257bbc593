"""SQLAlchemy 2 async: the declarative base, the engine, and the per-request session.

The same models and migrations run on Postgres (asyncpg) and SQLite (aiosqlite); the URL alone
decides which.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import (
    ColumnElement,
    DateTime,
    Executable,
    MetaData,
    Text,
    event,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, QueryableAttribute, mapped_column
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, Uuid
from sqlalchemy.util.concurrency import greenlet_spawn

# Deterministic constraint names, so Alembic can alter them on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps everywhere; SQLite forgets the zone, so it is put back."""

    impl = DateTime(timezone=True)
    cache_ok = True

    # The dialect argument is part of the signature SQLAlchemy calls; UTC handling ignores it.
    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, uuid.UUID: Uuid}


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # FKs are off by default in SQLite; WAL lets the embedded worker read while the API writes.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _begin_before_savepoint(conn: Connection, _name: str) -> None:
    # pysqlite opens a transaction only before INSERT/UPDATE/DELETE, so a SAVEPOINT issued
    # first became the outermost transaction and its RELEASE committed (an Idempotency-Key
    # claim stayed behind after its request failed). An explicit BEGIN makes the savepoint
    # nested, as on Postgres. SQLAlchemy's recipe of BEGIN for every transaction is not used:
    # in WAL mode a transaction that read first then writes fails at once (SQLITE_BUSY_SNAPSHOT)
    # when another connection committed meanwhile; reads outside a transaction avoid that.
    driver = conn.connection.driver_connection
    if driver is not None and not driver.in_transaction:
        conn.exec_driver_sql("BEGIN")


async def insert_ignoring_conflict(
    session: AsyncSession, model: type[Base], values: dict[str, Any], *, unique: list[str]
) -> None:
    """INSERT … ON CONFLICT (``unique``) DO NOTHING on Postgres and SQLite alike: a concurrent
    insert of the same row waits for the other to commit, then leaves its row in place."""
    dialect = session.get_bind().dialect.name
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    await session.execute(
        insert(model).values(**values).on_conflict_do_nothing(index_elements=unique)
    )


def seconds_between(
    session: AsyncSession, start: QueryableAttribute[Any], end: QueryableAttribute[Any]
) -> ColumnElement[Any]:
    """``end - start`` in seconds, as SQL that both Postgres and SQLite understand."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)


class row_fingerprint(FunctionElement[str]):  # noqa: N801 (an SQL function's name)
    """A digest of the given columns' values on Postgres (``md5`` of the row's text, where NULL
    and an empty string differ), NULL on SQLite, which has no digest function.

    For a process that remembers what it built from a row: keying on one short string is
    cheaper than hashing and comparing every column (aware datetimes and UUIDs hash in Python).
    Key on it together with the row's id: the digest alone is not made unforgeable."""

    type = Text()
    inherit_cache = True


@compiles(row_fingerprint, "postgresql")
def _row_fingerprint_postgresql(element: row_fingerprint, compiler: Any, **kw: Any) -> str:
    return f"md5(CAST(ROW({compiler.process(element.clauses, **kw)}) AS TEXT))"


@compiles(row_fingerprint)
def _row_fingerprint_other(_element: row_fingerprint, _compiler: Any, **_kw: Any) -> str:
    return "NULL"


# A database that is down must turn into a quick 503, not a request hanging on a connect (asyncpg
# waits 60 s by default) or on a pool slot (SQLAlchemy waits 30 s). A stopped or restarting
# Postgres refuses at once whatever this says; the bound is for a host that does not answer.
# It was 2 s, and a healthy Postgres on a busy 2-core machine took 2.2 s to start a backend
# and authenticate (a CI run answered a registration 503): a new connection is rare (pooled),
# so a few seconds more there cost nothing while an outage still answers quickly.
CONNECT_TIMEOUT_SECONDS = 5.0
POOL_TIMEOUT_SECONDS = 5.0


def create_engine(url: str, *, pool_size: int = 5, max_overflow: int = 2) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "savepoint", _begin_before_savepoint)
        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_driver_name() == "asyncpg":
        connect_args["timeout"] = CONNECT_TIMEOUT_SECONDS
    # Each process may hold pool_size + max_overflow connections: see infra/README.md's budget.
    # All of them are kept once opened: SQLAlchemy closes an overflow connection when it comes
    # back to a full pool, so a process busier than its pool reconnected (a Postgres backend
    # started and authenticated) for a share of its transactions; 8 concurrent task creators on
    # 5 + 2 connections spent more on that than on their statements.
    engine = create_async_engine(
        url,
        pool_size=pool_size + max_overflow,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        connect_args=connect_args,
    )
    _ping_when_idle(engine)
    return engine


# A connection back in the pool for less than this is used without a ping. SQLAlchemy's
# pool_pre_ping pays a round trip on every checkout (one in four of a cookie-authenticated
# read's); under load connections come back within milliseconds, so only a quiet pool pings.
# A connection that broke within the last second fails its statement as a disconnect, which
# invalidates the whole pool (that request answers 503) and the next one connects afresh.
IDLE_PING_SECONDS = 1.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    def checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["atelier.idle_since"] = time.monotonic()

    def checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        # record.info is emptied when a connection is replaced: a fresh one is not pinged.
        since = record.info.get("atelier.idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            # The pool discards this connection and checks out a new one.
            raise DisconnectionError(f"idle connection failed its ping: {exc}") from exc

    event.listen(engine.sync_engine, "checkin", checkin)
    event.listen(engine.sync_engine, "checkout", checkout)


class Database:
    """Owns the engine and the session factory of one app instance.

    ``bind`` lets tests hand in a connection with an open transaction: sessions then work in
    savepoints, so each request's commit is real to the app yet rolled back after the test.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        max_overflow: int = 2,
        bind: AsyncConnection | None = None,
    ) -> None:
        self.url = url
        self._owned_engine: AsyncEngine | None = None
        self._bind = bind
        # Short reads wait for one of the pool's connections rather than open an overflow one:
        # an overflow connection is closed again at check-in whenever the pool is full, so a
        # busy instance reconnected (TLS attempt, authentication) for a fraction of its reads.
        # Holders only run a statement or two, so the wait is short; writers keep the overflow.
        self._read_slots = asyncio.Semaphore(pool_size)
        if bind is None:
            self._owned_engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow)
            self.sessionmaker = async_sessionmaker(self._owned_engine, expire_on_commit=False)
            # For requests of safe methods (GET, HEAD): each statement commits by itself, which
            # spares the BEGIN and COMMIT round trips around what is a read or two. Same pool.
            self._read_engine = self._owned_engine.execution_options(isolation_level="AUTOCOMMIT")
            self.read_sessionmaker = async_sessionmaker(self._read_engine, expire_on_commit=False)
        else:
            self.sessionmaker = async_sessionmaker(
                bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
            )
            self.read_sessionmaker = self.sessionmaker

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection for a read or two in autocommit, without an ORM session (whose
        setup and result machinery cost more than a short read). Held only inside the block,
        so a request does not keep a connection while it encodes its answer."""
        if self._bind is not None:
            yield self._bind
            return
        async with self._read_slots, self._read_engine.connect() as conn:
            yield conn

    async def fetch(self, stmt: Executable, values: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of one read, in autocommit, as plain tuples.

        On asyncpg the driver runs the statement, compiled once, on a connection taken straight
        from the pool: an ``AsyncConnection`` around it (execution options, isolation level set
        and reset, result machinery) cost more than the driver's own work for a short read. So
        values go in and come out in the driver's own types (no type decorators, enums as their
        strings); keep to columns where both agree, and build ``stmt`` once (it is the cache
        key of its compiled form). Elsewhere (SQLite, a test's bound transaction) it runs
        through SQLAlchemy."""
        if self._bind is not None or self._read_engine.dialect.driver != "asyncpg":
            async with self.reader() as conn:
                return [tuple(row) for row in (await conn.execute(stmt, values)).all()]
        import asyncpg

        sql, names = _driver_sql(stmt, self._read_engine.dialect)
        engine = self._read_engine.sync_engine
        async with self._read_slots:
            # The pool's checkout (and its idle ping) and check-in run in SQLAlchemy's greenlet,
            # as they do for a Connection; the statement itself is a plain driver call.
            pooled = await greenlet_spawn(engine.raw_connection)
            try:
                driver: Any = pooled.driver_connection
                records = await driver.fetch(sql, *(values[name] for name in names))
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError) as exc:
                # Out of the pool for good: handed out again, the dead connection would fail
                # every read that comes within the idle-ping second (all of a busy instance's).
                await greenlet_spawn(pooled.invalidate, exc)
                raise
            finally:
                await greenlet_spawn(pooled.close)
        return [tuple(record) for record in records]

    async def ping(self) -> None:
        async with self.sessionmaker() as session:
            await session.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self._owned_engine is not None:
            await self._owned_engine.dispose()


@lru_cache(maxsize=32)
def _driver_sql(stmt: Executable, dialect: Dialect) -> tuple[str, tuple[str, ...]]:
    compiled = stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
    return str(compiled), tuple(compiled.positiontup or ())


# Work to run once the current transaction has committed (enqueueing a job for a task row, say):
# never before, so no worker sees a row that may still roll back, and never after a rollback.
_ON_COMMIT = "atelier.on_commit"
Callback = Callable[[], Awaitable[None]]


def on_commit(session: AsyncSession, callback: Callback) -> None:
    session.info.setdefault(_ON_COMMIT, []).append(callback)


def discard_on_commit(session: AsyncSession) -> None:
    session.info.pop(_ON_COMMIT, None)


async def commit(session: AsyncSession) -> None:
    """Commit, then run what was waiting for it. Use instead of ``session.commit()``."""
    await session.commit()
    callbacks: list[Callback] = session.info.pop(_ON_COMMIT, [])
    for callback in callbacks:
        await callback()


async def rollback(session: AsyncSession) -> None:
    discard_on_commit(session)
    await session.rollback()


def get_database(request: Request) -> Database:
    db: Database = request.app.state.resources.db
    return db


SAFE_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, committed once after the endpoint returns.

    Used with ``scope="function"`` so the commit happens before the response is sent: a failed
    commit becomes an error answer instead of a success the database never saw.
    """
    db = get_database(request)
    maker = db.read_sessionmaker if request.method in SAFE_METHODS else db.sessionmaker
    async with maker() as session:
        try:
            yield session
        except BaseException:
            await rollback(session)
            raise
        else:
            await commit(session)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
