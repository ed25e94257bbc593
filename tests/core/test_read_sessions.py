"""A request of a safe method reads without BEGIN/COMMIT round trips (each statement commits by
itself); any other method still runs in one transaction committed after the endpoint."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.conftest import PASSWORD, AppFactory, client_for, unique_email


async def test_get_reads_without_a_transaction_and_post_keeps_one(
    make_live_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    simple: list[str] = []  # BEGIN/COMMIT/ROLLBACK go through Connection.execute
    real = asyncpg.connection.Connection.execute

    async def recording(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        simple.append(query.strip(";").upper())
        return await real(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.connection.Connection, "execute", recording)
    app = make_live_app()
    async with client_for(app) as c:
        simple.clear()
        answer = await c.post(
            "/api/auth/register", json={"email": unique_email("rt"), "password": PASSWORD}
        )
        assert answer.status_code == 201, answer.text
        assert "BEGIN" in simple
        assert "COMMIT" in simple
        simple.clear()
        assert (await c.get("/api/auth/me")).status_code == 200
        assert (await c.get("/api/images")).status_code == 200
        assert [q for q in simple if q in ("BEGIN", "COMMIT", "ROLLBACK")] == []
