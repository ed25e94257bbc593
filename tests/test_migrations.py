"""Migrations go up and down on Postgres and SQLite, and match the models exactly."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url

from backend.core.db import create_engine
from backend.core.migrations import ROOT, downgrade, upgrade
from backend.models import Base
from tests.servers import Server

TABLES = {
    "users",
    "auth_sessions",
    "refresh_tokens",
    "api_keys",
    "tasks",
    "idempotency_keys",
    "images",
    "image_blobs",
    "uploads",
    "sketches",
    "batches",
    "batch_items",
    "webhook_deliveries",
    "delivery_derivatives",
}


async def _tables_and_drift(url: str) -> tuple[set[str], list[object]]:
    engine = create_engine(url)

    def inspect_sync(conn: Connection) -> tuple[set[str], list[object]]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return set(inspect(conn).get_table_names()), list(compare_metadata(context, Base.metadata))

    try:
        async with engine.connect() as conn:
            return await conn.run_sync(inspect_sync)
    finally:
        await engine.dispose()


def _roundtrip(url: str) -> None:
    upgrade(url)
    tables, drift = asyncio.run(_tables_and_drift(url))
    assert TABLES <= tables
    assert drift == [], f"models and migrations disagree: {drift}"
    downgrade(url, "base")
    tables, _ = asyncio.run(_tables_and_drift(url))
    assert tables <= {"alembic_version"}
    upgrade(url)


@pytest.fixture
def scratch_pg(pg_server: Server) -> str:
    name = f"mig_{uuid.uuid4().hex[:8]}"
    url = make_url(pg_server.url)

    async def create() -> None:
        conn = await asyncpg.connect(
            host=url.host, port=url.port, user=url.username, database=url.database
        )
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return url.set(database=name).render_as_string(hide_password=False)


def test_postgres_up_down_up(scratch_pg: str) -> None:
    _roundtrip(scratch_pg)


def test_sqlite_up_down_up(tmp_path: Path) -> None:
    _roundtrip(f"sqlite+aiosqlite:///{tmp_path / 'atelier.db'}")


def test_migration_files_follow_the_naming_rule() -> None:
    names = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("*.py"))
    assert names
    for name in names:
        stamp, _, slug = name.removesuffix(".py").partition("_")
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-\d{4}", stamp), name
        assert slug, name
