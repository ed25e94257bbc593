"""``Database.fetch`` runs a read on the asyncpg driver directly: its rows must carry the same
values as SQLAlchemy's own execution of the statement (a page of the image listing here)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC

import pytest
from sqlalchemy import Text, func, literal, literal_column, select
from sqlalchemy.dialects import sqlite

from backend.auth.models import User
from backend.core.db import Database, row_fingerprint
from backend.images.service import _unfiltered_page
from tests.bench.test_request_bench import add_images
from tests.servers import Server


async def test_driver_rows_match_sqlalchemys(committed_database: Database) -> None:
    db = committed_database
    async with db.sessionmaker() as session:
        user = User(email=f"{uuid.uuid4().hex}@example.com", password_hash="x")
        session.add(user)
        await session.commit()
    await add_images(db, user.id, 5)
    first = {"user_id": user.id, "limit": 4}
    driver = await db.fetch(_unfiltered_page(False), first)
    async with db.reader() as conn:
        assert conn.dialect.driver == "asyncpg"
        orm = [tuple(row) for row in (await conn.execute(_unfiltered_page(False), first)).all()]
        last = orm[-1]
        after = {"user_id": user.id, "limit": 4, "after_at": last[10], "after_id": last[0]}
        orm_after = await conn.execute(_unfiltered_page(True), after)
    driver_after = await db.fetch(_unfiltered_page(True), after)
    assert len(driver) == 4
    assert driver == orm  # str enums equal their strings, asyncpg's UUIDs equal uuid.UUID
    assert all(
        row[10].tzinfo is not None and row[10].utcoffset() == UTC.utcoffset(None) for row in driver
    )
    assert driver_after == [tuple(row) for row in orm_after.all()]
    assert len(driver_after) == 1


async def test_a_row_fingerprint_tells_every_change_apart(committed_database: Database) -> None:
    """The listing remembers an item's JSON by its id and this digest: two rows that differ in
    any listed column, even NULL against an empty string, must not share one."""
    values = [
        ("a", None, "b"),
        ("a", "", "b"),
        (None, "a", "b"),
        ("a,b", None, None),
        ("a", "b", None),
        ('a"', "b", None),
        ("a", '"b', None),
    ]
    digests = set()
    async with committed_database.reader() as conn:
        for first, second, third in values:
            digest = await conn.scalar(
                select(
                    row_fingerprint(
                        literal(first, Text), literal(second, Text), literal(third, Text)
                    )
                )
            )
            assert isinstance(digest, str)
            assert len(digest) == 32
            digests.add(digest)
    assert len(digests) == len(values)


def test_sqlite_has_no_fingerprint() -> None:
    # The listing then keys on the columns themselves.
    compiled = select(row_fingerprint(literal("a", Text))).compile(dialect=sqlite.dialect())
    assert str(compiled).startswith("SELECT NULL")


async def test_a_read_cancelled_mid_statement_leaves_no_broken_connection(
    pg_server: Server,
) -> None:
    """A request cancelled while its read runs (a client gone, a timeout) must not leave the
    pool a connection still busy with that statement: the next read would fail on it. asyncpg
    cancels the statement on the server and the connection goes back to the pool usable."""
    db = Database(pg_server.url, pool_size=1, max_overflow=0)
    try:
        slow = asyncio.create_task(db.fetch(select(func.pg_sleep(literal_column("5"))), {}))
        await asyncio.sleep(0.3)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        async with asyncio.timeout(4):
            for _ in range(3):
                assert await db.fetch(select(literal_column("7")), {}) == [(7,)]
    finally:
        await db.dispose()
