"""The connection pool pings a connection only after it sat idle: a hot pool spends no round
trip on it, and a connection that died while idle is replaced without failing the request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from backend.core import db as dbmod
from backend.core.db import Database
from tests.servers import Server


@pytest.fixture
async def pool(pg_server: Server) -> AsyncIterator[Database]:
    database = Database(pg_server.url, pool_size=1, max_overflow=0)
    yield database
    await database.dispose()


async def _pid(database: Database) -> int:
    async with database.sessionmaker() as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


def _count_pings(database: Database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    engine = database.sessionmaker.kw["bind"]
    pings: list[int] = []
    real = engine.dialect.do_ping

    def counting(dbapi_connection: Any) -> bool:
        pings.append(1)
        return bool(real(dbapi_connection))

    monkeypatch.setattr(engine.dialect, "do_ping", counting)
    return pings


async def test_a_hot_connection_is_not_pinged(
    pool: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _count_pings(pool, monkeypatch)
    first = await _pid(pool)
    for _ in range(5):
        assert await _pid(pool) == first
    assert pings == []


async def test_an_idle_connection_that_died_is_replaced(
    pool: Database, pg_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _count_pings(pool, monkeypatch)
    dead = await _pid(pool)
    other = Database(pg_server.url)
    try:
        async with other.sessionmaker() as session:
            await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dead})
    finally:
        await other.dispose()
    # As if the connection had sat in the pool past the threshold.
    monkeypatch.setattr(dbmod, "IDLE_PING_SECONDS", 0.0)
    assert await _pid(pool) != dead
    assert pings == [1]
