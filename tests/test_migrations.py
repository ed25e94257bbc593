"""Migrations go up and down on Postgres and SQLite, and match the models exactly."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url

from backend.core.db import create_engine
from backend.core.migrations import MIGRATION_LOCK_KEY, ROOT, downgrade, upgrade
from backend.models import Base
from tests.servers import Server

ATELIER = str(Path(sys.executable).with_name("atelier"))
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


async def _wait_for_text(path: Path, text: str, deadline: float) -> None:
    while text not in (path.read_text() if path.exists() else ""):
        if time.monotonic() > deadline:
            pytest.fail(f"{path.name} never logged {text!r}:\n{path.read_text()[-2000:]}")
        await asyncio.sleep(0.05)


async def test_concurrent_migrations_serialize_on_an_advisory_lock(
    scratch_pg: str, tmp_path: Path
) -> None:
    """Two `atelier migrate` at once on a fresh database: one migrates, the other waits for it
    and then finds nothing to do; both succeed and the schema matches the models."""
    url = make_url(scratch_pg)
    # Hold the lock first, so both processes are certainly waiting at the same time.
    holder = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, database=url.database
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update({"ATELIER_ENV": "dev", "DATABASE_URL": scratch_pg})
    logs = [tmp_path / "migrate-a.log", tmp_path / "migrate-b.log"]
    procs = []
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        for log in logs:
            with log.open("wb") as out:
                procs.append(
                    await asyncio.create_subprocess_exec(
                        ATELIER, "migrate", cwd=tmp_path, env=env, stdout=out, stderr=out
                    )
                )
        deadline = time.monotonic() + 60
        for log in logs:
            await _wait_for_text(log, "migration_lock_waiting", deadline)
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        codes = [await asyncio.wait_for(proc.wait(), 120) for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await holder.close()
    assert codes == [0, 0], [log.read_text()[-2000:] for log in logs]
    outputs = [[json.loads(line) for line in log.read_text().splitlines()] for log in logs]
    messages = [[line["message"] for line in output] for output in outputs]
    for seen in messages:
        assert "migration_lock_acquired" in seen
    # Exactly one ran the revisions; the other, once it had the lock, found the schema at head.
    ran = [any(m.startswith("Running upgrade") for m in seen) for seen in messages]
    assert sorted(ran) == [False, True]
    assert "migrations_up_to_date" in messages[ran.index(False)]
    assert "migrations_finished" in messages[ran.index(True)]
    tables, drift = await _tables_and_drift(scratch_pg)
    assert TABLES <= tables
    assert drift == []
