"""/api/tasks over HTTP, Idempotency-Key, and task metrics."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

import tests.tasks.kinds  # noqa: F401 - registers the test task kinds
from backend.auth.deps import CurrentUser
from backend.core.db import SessionDep
from backend.core.resources import RedisDep
from backend.tasks import service
from backend.tasks.deps import QueueDep
from backend.tasks.idempotency import IdempotencyDep
from backend.tasks.schemas import TaskOut
from tests.auth.test_router import assert_problem
from tests.conftest import SignedIn, client_for


class Made(BaseModel):
    task: TaskOut
    note: str


class MakeIn(BaseModel):
    steps: int = 2


def add_creating_route(app: FastAPI) -> None:
    """What a feature's creating endpoint looks like: row, enqueue after commit, idempotent."""

    @app.post("/test/make", status_code=202)
    async def make(
        body: MakeIn,
        user: CurrentUser,
        session: SessionDep,
        queue: QueueDep,
        redis: RedisDep,
        idem: IdempotencyDep,
    ) -> object:
        async def produce() -> Made:
            task = await service.create_task(
                session,
                queue,
                redis,
                user_id=user.id,
                kind="test.steps",
                payload={"steps": body.steps},
            )
            return Made(task=TaskOut.model_validate(task), note="created")

        return await idem.respond(produce, status_code=202)


async def _make(
    c: httpx.AsyncClient, signed: SignedIn, key: str | None = None, steps: int = 2
) -> httpx.Response:
    headers = dict(signed.csrf)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await c.post("/test/make", json={"steps": steps}, headers=headers)


async def test_tasks_are_listed_read_and_canceled_by_their_owner_only(
    app: FastAPI, alice: SignedIn, bob: SignedIn
) -> None:
    add_creating_route(app)
    made = await _make(alice.client, alice)
    assert made.status_code == 202, made.text
    task = made.json()["task"]
    assert task["status"] == "queued"
    assert task["progress"] == 0
    assert task["kind"] == "test.steps"
    assert set(task) >= {
        "id",
        "kind",
        "status",
        "progress",
        "image_id",
        "sketch_id",
        "batch_id",
        "error",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
        "result",
    }

    listed = (await alice.client.get("/api/tasks")).json()
    assert [t["id"] for t in listed["items"]] == [task["id"]]
    assert (await alice.client.get("/api/tasks", params={"status": "queued"})).json()["items"]
    assert (await alice.client.get("/api/tasks", params={"status": "failed"})).json()["items"] == []
    assert_problem(
        await alice.client.get("/api/tasks", params={"status": "bogus"}), 422, "request.validation"
    )
    assert (await alice.client.get(f"/api/tasks/{task['id']}")).json()["id"] == task["id"]

    # Bob sees nothing of alice's work: foreign ids answer like missing ones.
    assert (await bob.client.get("/api/tasks")).json()["items"] == []
    foreign = await bob.client.get(f"/api/tasks/{task['id']}")
    missing = await bob.client.get(f"/api/tasks/{uuid.uuid4()}")
    assert assert_problem(foreign, 404, "task.not_found") == assert_problem(
        missing, 404, "task.not_found"
    )
    assert_problem(
        await bob.client.post(f"/api/tasks/{task['id']}/cancel", headers=bob.csrf),
        404,
        "task.not_found",
    )

    assert_problem(await alice.client.post(f"/api/tasks/{task['id']}/cancel"), 403, "auth.csrf")
    canceled = await alice.client.post(f"/api/tasks/{task['id']}/cancel", headers=alice.csrf)
    assert canceled.status_code == 202
    assert canceled.json()["status"] == "canceled"
    again = await alice.client.post(f"/api/tasks/{task['id']}/cancel", headers=alice.csrf)
    assert_problem(again, 409, "task.already_finished")


async def test_idempotency_key_returns_the_first_answer(
    app: FastAPI, alice: SignedIn, bob: SignedIn
) -> None:
    add_creating_route(app)
    first = await _make(alice.client, alice, key="order-1")
    second = await _make(alice.client, alice, key="order-1")
    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len((await alice.client.get("/api/tasks")).json()["items"]) == 1

    reused = await _make(alice.client, alice, key="order-1", steps=3)
    assert_problem(reused, 422, "idempotency.key_reused")
    # Keys are per user: bob's "order-1" is his own.
    bobs = await _make(bob.client, bob, key="order-1")
    assert bobs.json()["task"]["id"] != first.json()["task"]["id"]
    # Without a key every request creates.
    await _make(alice.client, alice)
    await _make(alice.client, alice)
    assert len((await alice.client.get("/api/tasks")).json()["items"]) == 3
    assert_problem(await _make(alice.client, alice, key="x" * 300), 422, "idempotency.invalid_key")


async def test_a_failed_request_does_not_burn_its_key(app: FastAPI, alice: SignedIn) -> None:
    add_creating_route(app)
    bad = await alice.client.post(
        "/test/make", json={"steps": "many"}, headers={**alice.csrf, "Idempotency-Key": "k"}
    )
    assert bad.status_code == 422
    good = await _make(alice.client, alice, key="k")
    assert good.status_code == 202
    assert "Idempotent-Replayed" not in good.headers


async def test_metrics_report_tasks_and_queue_depth(app: FastAPI, alice: SignedIn) -> None:
    add_creating_route(app)
    await _make(alice.client, alice)
    async with client_for(app) as c:
        text = (await c.get("/metrics")).text
    assert 'atelier_tasks{kind="test.steps",status="queued"} 1.0' in text
    assert "atelier_queue_depth 1.0" in text
    assert "atelier_task_duration_seconds_sum" in text
