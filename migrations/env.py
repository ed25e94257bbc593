"""Alembic environment: async engine, URL from Settings, batch mode on SQLite."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import structlog
from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from backend.core.db import UTCDateTime, create_engine
from backend.core.migrations import MIGRATION_LOCK_KEY
from backend.models import Base

log = structlog.get_logger("atelier.migrations")

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    # Callers (the CLI, tests) put the URL in the config; otherwise Settings decide.
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from backend.config import get_settings

    return get_settings().database_url


def _render_item(type_: str, obj: object, autogen_context: Any) -> str | Literal[False]:  # noqa: ARG001
    # Migrations must not import app code that may change later: spell our UTC type as SQL.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    is_sqlite = (url or _url()).startswith("sqlite")
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=is_sqlite,
        compare_type=True,
        render_item=_render_item,
        literal_binds=connection is None,
    )


def run_migrations_offline() -> None:
    _configure(url=_url())
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection=connection)
    before = context.get_context().get_current_revision()
    log.info("migrations_starting", revision=before, target=context.get_revision_argument())
    started = time.perf_counter()
    with context.begin_transaction():
        context.run_migrations()
    after = context.get_context().get_current_revision()
    log.info(
        "migrations_finished" if after != before else "migrations_up_to_date",
        revision=after,
        seconds=round(time.perf_counter() - started, 3),
    )


async def _lock(connection: AsyncConnection) -> None:
    """One migrator at a time per database: a session-level Postgres advisory lock.

    Two deploys (or a deploy and `make stack`) may migrate at once; the second waits here and
    then finds the schema already at head.
    """
    key = {"key": MIGRATION_LOCK_KEY}
    got = await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), key)
    if not got:
        log.info("migration_lock_waiting", lock_key=MIGRATION_LOCK_KEY)
        started = time.perf_counter()
        await connection.execute(text("SELECT pg_advisory_lock(:key)"), key)
        log.info("migration_lock_acquired", waited_seconds=round(time.perf_counter() - started, 3))
    # The lock belongs to the session and outlives this transaction; end it so Alembic's own
    # transaction starts clean.
    await connection.commit()


async def _unlock(connection: AsyncConnection) -> None:
    try:
        await connection.rollback()
        await connection.execute(
            text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
        )
        await connection.commit()
    except Exception as exc:  # noqa: BLE001 - closing the connection releases the lock anyway
        log.warning("migration_unlock_failed", error=str(exc))


async def run_migrations_online() -> None:
    url = _url()
    engine = create_engine(url)
    postgres = engine.dialect.name == "postgresql"
    try:
        async with engine.connect() as connection:
            if postgres:
                await _lock(connection)
            try:
                await connection.run_sync(_run_sync)
                await connection.commit()
            finally:
                if postgres:
                    await _unlock(connection)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
