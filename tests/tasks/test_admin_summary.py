"""The admin overview endpoints on Postgres and on SQLite (embedded): every user's tasks by kind
and status with the latest failures, and the user search behind the admin screen."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from backend.auth.models import Role, User
from backend.core.db import utcnow
from backend.tasks.models import Task, TaskStatus
from tests.auth.test_router import assert_problem
from tests.conftest import PASSWORD, client_for, unique_email


@pytest.fixture
def stack(app_on_each_database: FastAPI) -> FastAPI:
    return app_on_each_database


@asynccontextmanager
async def member(
    app: FastAPI, email: str | None = None, *, admin: bool = False, name: str | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], uuid.UUID]]:
    async with client_for(app) as c:
        body = {"email": email or unique_email(), "password": PASSWORD}
        if name:
            body["display_name"] = name
        answer = await c.post("/api/auth/register", json=body)
        assert answer.status_code == 201, answer.text
        user_id = uuid.UUID(answer.json()["id"])
        if admin:
            async with app.state.resources.db.sessionmaker() as session:
                await session.execute(
                    update(User).where(User.id == user_id).values(role=Role.admin)
                )
                await session.commit()
        yield c, {"X-CSRF-Token": c.cookies["csrf_token"]}, user_id


async def add_tasks(app: FastAPI, user_id: uuid.UUID, rows: list[dict[str, object]]) -> None:
    """Task rows as the workers leave them (queued, running, finished, failed with a code)."""
    async with app.state.resources.db.sessionmaker() as session:
        for row in rows:
            session.add(Task(user_id=user_id, **row))
        await session.commit()


async def test_task_summary_counts_every_users_tasks_and_lists_failures(stack: FastAPI) -> None:
    async with (
        member(stack, admin=True) as (root, _, _root_id),
        member(stack) as (_alice, _, alice_id),
        member(stack) as (_bob, _, bob_id),
    ):
        now = utcnow()
        await add_tasks(
            stack,
            alice_id,
            [
                {"kind": "sketch", "status": TaskStatus.succeeded, "finished_at": now},
                {
                    "kind": "sketch",
                    "status": TaskStatus.queued,
                    "created_at": now - timedelta(hours=2),
                },
                {
                    "kind": "caption",
                    "status": TaskStatus.failed,
                    "error_code": "ai.timeout",
                    "error": "The provider took too long. " * 30,
                    "attempts": 3,
                    "finished_at": now - timedelta(minutes=5),
                    "updated_at": now - timedelta(minutes=5),
                },
            ],
        )
        await add_tasks(
            stack,
            bob_id,
            [
                {"kind": "thumbnails", "status": TaskStatus.running},
                {
                    "kind": "sketch",
                    "status": TaskStatus.failed,
                    "error_code": "task.lost",
                    "error": "The worker went away.",
                    "finished_at": now,
                    "updated_at": now,
                },
                {
                    "kind": "sketch",
                    "status": TaskStatus.failed,
                    "error_code": "task.lost",
                    "finished_at": now - timedelta(minutes=1),
                    "updated_at": now - timedelta(minutes=1),
                },
            ],
        )

        answer = await root.get("/api/admin/tasks/summary", params={"failures": 2})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["total"] == 6
        assert body["by_status"] == {
            "queued": 1, "running": 1, "succeeded": 1, "failed": 3, "canceled": 0,
        }  # fmt: skip
        assert body["by_kind"]["sketch"] == {
            "queued": 1, "running": 0, "succeeded": 1, "failed": 2, "canceled": 0,
        }  # fmt: skip
        assert body["by_kind"]["thumbnails"]["running"] == 1
        assert list(body["by_kind"]) == ["caption", "sketch", "thumbnails"]
        assert body["failed_by_code"] == {"task.lost": 2, "ai.timeout": 1}
        assert body["oldest_queued_at"] is not None
        # Newest failure first, two asked for: both of bob's, with his email.
        failures = body["recent_failures"]
        assert [f["error_code"] for f in failures] == ["task.lost", "task.lost"]
        assert failures[0]["error"] == "The worker went away."
        assert {f["user_id"] for f in failures} == {str(bob_id)}
        assert failures[0]["user_email"].startswith("user-")

        everything = (await root.get("/api/admin/tasks/summary")).json()["recent_failures"]
        assert len(everything) == 3
        assert len(everything[2]["error"]) == 300  # long messages are cut


async def test_task_summary_is_for_admins_only(stack: FastAPI) -> None:
    async with client_for(stack) as anonymous:
        assert_problem(await anonymous.get("/api/admin/tasks/summary"), 401, "auth.unauthenticated")
    async with member(stack) as (alice, _, _):
        assert_problem(await alice.get("/api/admin/tasks/summary"), 403, "auth.admin_required")
    async with member(stack, admin=True) as (root, _, _):
        for bad in ("-1", "51", "many"):
            answer = await root.get("/api/admin/tasks/summary", params={"failures": bad})
            assert_problem(answer, 422, "request.validation")
        empty = (await root.get("/api/admin/tasks/summary")).json()
        assert empty["total"] == 0
        assert empty["by_kind"] == {}
        assert empty["oldest_queued_at"] is None


async def test_user_search_matches_email_or_name_in_any_case(stack: FastAPI) -> None:
    tag = uuid.uuid4().hex[:8]
    async with (
        member(stack, admin=True) as (root, _, _),
        member(stack, f"Marie.{tag}@example.com") as (_, _, marie),
        member(stack, f"paul-{tag}@example.com", name="Marie Curie fan") as (_, _, paul),
        member(stack, f"odd_{tag}@example.com") as (_, _, odd),
        member(stack, f"oddx{tag}@example.com") as (_, _, _oddx),
    ):

        async def search(q: str) -> list[str]:
            answer = await root.get("/api/admin/users", params={"q": q, "limit": 100})
            assert answer.status_code == 200, answer.text
            return [u["id"] for u in answer.json()["items"]]

        assert set(await search(f"marie.{tag.upper()}")) == {str(marie)}
        assert set(await search("MARIE")) >= {str(marie), str(paul)}
        # "_" and "%" are literal characters, not LIKE wildcards.
        assert await search(f"odd_{tag}") == [str(odd)]
        assert await search(f"%{tag}") == []
        # A search pages like the plain list.
        first = (await root.get("/api/admin/users", params={"q": tag, "limit": 2})).json()
        assert len(first["items"]) == 2
        rest = await root.get(
            "/api/admin/users", params={"q": tag, "limit": 2, "cursor": first["next_cursor"]}
        )
        assert len(rest.json()["items"]) == 2
        answer = await root.get("/api/admin/users", params={"q": "x" * 101})
        assert_problem(answer, 422, "request.validation")
