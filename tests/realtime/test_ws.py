"""``/ws`` on a real uvicorn, real Redis and a committed Postgres; the hub on its own below.

Users are registered over HTTP on the live server, task rows are written with the task service
and events published exactly as workers publish them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from backend.auth.sessions import publish_revocation
from backend.core.db import Database, commit
from backend.core.redis import create_redis
from backend.realtime.hub import Hub, HubClosed, SlowConsumer, Subscription, send_directly
from backend.realtime.router import router as realtime_router
from backend.tasks.events import CHANNEL, publish
from backend.tasks.models import Task, TaskStatus
from backend.tasks.registry import TaskContext, task
from backend.tasks.service import create_task
from tests.conftest import PASSWORD, AppFactory, unique_email
from tests.live import serve
from tests.servers import restart_redis, start_redis

WS_KIND = "test.ws"
# One of the default ALLOWED_ORIGINS.
GOOD_ORIGIN = "http://localhost:8000"
TIMEOUT = 5.0


@task(WS_KIND, timeout=5)
async def _never_run(_ctx: TaskContext) -> None:
    # No worker runs here: the rows exist only to be snapshotted and announced.
    return None


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture
def live_app(make_live_app: AppFactory) -> AppFactory:
    """``make_live_app`` with the realtime router, whether or not ``create_app`` has it yet."""

    def factory(**overrides: object) -> FastAPI:
        app = make_live_app(**overrides)
        if not any(getattr(route, "path", None) == "/ws" for route in app.routes):
            app.include_router(realtime_router)
        return app

    return factory


@dataclass
class LiveUser:
    id: uuid.UUID
    cookies: dict[str, str]

    @property
    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    @property
    def csrf(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.cookies["csrf_token"]}


def cookies_from(response: httpx.Response) -> dict[str, str]:
    # Straight from Set-Cookie: the cookies are Secure, so httpx's jar would not send them to
    # the plain-http live server.
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return {name: morsel.value for name, morsel in jar.items() if morsel.value}


async def register(base_url: str, tag: str = "user") -> LiveUser:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        answer = await client.post(
            "/api/auth/register", json={"email": unique_email(tag), "password": PASSWORD}
        )
    assert answer.status_code == 201, answer.text
    return LiveUser(uuid.UUID(answer.json()["id"]), cookies_from(answer))


async def post_as(user: LiveUser, base_url: str, path: str, body: Any = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        return await client.post(
            path, json=body, headers={"Cookie": user.cookie_header, **user.csrf}
        )


@asynccontextmanager
async def open_ws(
    base_url: str,
    user: LiveUser | None = None,
    *,
    origin: str | None = GOOD_ORIGIN,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[ClientConnection]:
    sent = dict(headers or {})
    if user is not None:
        sent["Cookie"] = user.cookie_header
    if origin is not None:
        sent["Origin"] = origin
    url = base_url.replace("http://", "ws://", 1) + "/ws"
    async with connect(url, additional_headers=sent, open_timeout=TIMEOUT, close_timeout=2) as ws:
        yield ws


async def handshake_status(base_url: str, user: LiveUser | None = None, **kwargs: Any) -> int:
    """101 when the upgrade is accepted (and a snapshot arrives), else the HTTP status."""
    try:
        async with open_ws(base_url, user, **kwargs) as ws:
            assert (await receive(ws))["type"] == "snapshot"
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return message


async def receive_event(ws: ClientConnection) -> dict[str, Any]:
    """The next message that is not a keep-alive ping."""
    while (message := await receive(ws))["type"] == "ping":
        pass
    return message


async def new_task(db: Database, app: FastAPI, redis: Redis, user_id: uuid.UUID) -> Task:
    """A queued row, created like any endpoint does (its commit publishes one event)."""
    async with db.sessionmaker() as session:
        row = await create_task(
            session, app.state.resources.queue, redis, user_id=user_id, kind=WS_KIND
        )
        await commit(session)
    return row


async def change_task(db: Database, task_id: uuid.UUID, **values: Any) -> Task:
    """Update a row the way a worker would, without announcing it."""
    async with db.sessionmaker() as session:
        row = await session.get(Task, task_id)
        assert row is not None
        for name, value in values.items():
            setattr(row, name, value)
        await commit(session)
    return row


def snapshot_ids(message: dict[str, Any]) -> list[str]:
    assert message["type"] == "snapshot", message
    return [t["id"] for t in message["tasks"]]


async def eventually(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(TIMEOUT):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(what)


# --- the socket ----------------------------------------------------------------------------


async def test_snapshot_comes_first_then_task_updates(
    live_app: AppFactory, committed_database: Database, redis: Redis
) -> None:
    app = live_app()
    async with serve(app) as base_url:
        alice = await register(base_url, "alice")
        queued = await new_task(committed_database, app, redis, alice.id)
        async with open_ws(base_url, alice) as ws:
            snapshot = await receive(ws)
            assert snapshot_ids(snapshot) == [str(queued.id)]
            assert snapshot["tasks"][0]["status"] == "queued"
            assert snapshot["tasks"][0]["kind"] == WS_KIND

            row = await change_task(
                committed_database, queued.id, status=TaskStatus.running, progress=40
            )
            await publish(redis, row)
            event = await receive_event(ws)
            assert event["type"] == "task.updated"
            assert event["task"]["id"] == str(queued.id)
            assert (event["task"]["status"], event["task"]["progress"]) == ("running", 40)


async def test_events_reach_sockets_on_another_instance(
    live_app: AppFactory, committed_database: Database, redis: Redis
) -> None:
    first, second = live_app(), live_app()
    async with serve(first) as first_url, serve(second) as second_url:
        alice = await register(first_url, "alice")
        async with open_ws(second_url, alice) as ws:
            assert snapshot_ids(await receive(ws)) == []
            # Created through the first instance's resources; its commit publishes the event.
            row = await new_task(committed_database, first, redis, alice.id)
            created = await receive_event(ws)
            assert (created["task"]["id"], created["task"]["status"]) == (str(row.id), "queued")

            # A worker elsewhere finishes it.
            row = await change_task(committed_database, row.id, status=TaskStatus.succeeded)
            await publish(redis, row)
            finished = await receive_event(ws)
            assert (finished["task"]["id"], finished["task"]["status"]) == (
                str(row.id),
                "succeeded",
            )


async def test_users_only_receive_their_own_events(
    live_app: AppFactory, committed_database: Database, redis: Redis
) -> None:
    app = live_app()
    async with serve(app) as base_url:
        alice, bob = await register(base_url, "alice"), await register(base_url, "bob")
        alices = [await new_task(committed_database, app, redis, alice.id) for _ in range(3)]
        async with open_ws(base_url, alice) as alice_ws, open_ws(base_url, bob) as bob_ws:
            assert len(snapshot_ids(await receive(alice_ws))) == 3
            assert snapshot_ids(await receive(bob_ws)) == []

            for progress, row in enumerate(alices, start=10):
                await publish(
                    redis, await change_task(committed_database, row.id, progress=progress)
                )
            bobs = await new_task(committed_database, app, redis, bob.id)
            last = await change_task(committed_database, alices[0].id, progress=99)
            await publish(redis, last)

            # Everything above went through one channel in this order: had any of Alice's
            # events leaked to Bob, it would come before his own.
            assert (await receive_event(bob_ws))["task"]["id"] == str(bobs.id)
            seen = [(await receive_event(alice_ws))["task"] for _ in range(4)]
            assert [(t["id"], t["progress"]) for t in seen] == [
                (str(alices[0].id), 10),
                (str(alices[1].id), 11),
                (str(alices[2].id), 12),
                (str(alices[0].id), 99),
            ]


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://localhost:8000.evil.example",
        "http://localhost:8001",
        "https://localhost:8000",
        "null",
    ],
)
async def test_foreign_origin_is_refused_before_the_upgrade(
    live_app: AppFactory, origin: str
) -> None:
    async with serve(live_app()) as base_url:
        alice = await register(base_url, "alice")
        assert await handshake_status(base_url, alice, origin=origin) == 403


async def test_allowed_or_missing_origin_is_accepted(live_app: AppFactory) -> None:
    async with serve(live_app()) as base_url:
        alice = await register(base_url, "alice")
        assert await handshake_status(base_url, alice, origin=GOOD_ORIGIN) == 101
        # Servers and scripts send no Origin; only browsers do, and they cannot omit it.
        assert await handshake_status(base_url, alice, origin=None) == 101


async def test_origins_are_compared_normalised(live_app: AppFactory) -> None:
    app = live_app(allowed_origins=["https://App.Example.com/"])
    async with serve(app) as base_url:
        alice = await register(base_url, "alice")
        assert await handshake_status(base_url, alice, origin="https://app.example.com") == 101
        assert await handshake_status(base_url, alice, origin=GOOD_ORIGIN) == 403


async def test_anonymous_is_refused(live_app: AppFactory) -> None:
    async with serve(live_app()) as base_url:
        assert await handshake_status(base_url) == 403
        assert await handshake_status(base_url, origin=None) == 403


async def test_tampered_or_revoked_session_is_refused(live_app: AppFactory) -> None:
    async with serve(live_app()) as base_url:
        alice = await register(base_url, "alice")
        header, payload, signature = alice.cookies["access_token"].split(".")
        flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
        tampered = LiveUser(
            alice.id, {**alice.cookies, "access_token": f"{header}.{payload}.{flipped}"}
        )
        assert await handshake_status(base_url, tampered) == 403
        assert await handshake_status(base_url, alice) == 101

        # A token whose signature is fine but whose session has ended is refused too.
        assert (await post_as(alice, base_url, "/api/auth/logout")).status_code == 204
        assert await handshake_status(base_url, alice) == 403


async def closed_with(ws: ClientConnection) -> int | None:
    """The close code the server ends ``ws`` with, reading (and ignoring) whatever comes first."""
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None


async def test_signing_out_ends_the_sessions_sockets_on_every_instance(
    live_app: AppFactory, committed_database: Database, redis: Redis
) -> None:
    first, second = live_app(), live_app()
    async with serve(first) as first_url, serve(second) as second_url:
        email = unique_email("alice")
        async with httpx.AsyncClient(base_url=first_url, timeout=10) as client:
            account = {"email": email, "password": PASSWORD}
            joined = await client.post("/api/auth/register", json=account)
            assert joined.status_code == 201, joined.text
            login = await client.post("/api/auth/login", json=account)
        alice = LiveUser(uuid.UUID(joined.json()["id"]), cookies_from(joined))
        assert login.status_code == 200, login.text
        elsewhere = LiveUser(alice.id, cookies_from(login))  # another device, same account

        async with (
            open_ws(second_url, alice) as ws,
            open_ws(second_url, elsewhere) as other,
        ):
            assert (await receive(ws))["type"] == "snapshot"
            assert (await receive(other))["type"] == "snapshot"
            # Signing out on the first instance ends that session's socket on the second.
            assert (await post_as(alice, first_url, "/api/auth/logout")).status_code == 204
            assert await closed_with(ws) == 1008
            # The other device's session is untouched: its socket still streams.
            row = await new_task(committed_database, second, redis, alice.id)
            assert (await receive_event(other))["task"]["id"] == str(row.id)


async def test_a_revocation_missed_while_redis_was_unheard_still_ends_the_socket(
    live_app: AppFactory, committed_database: Database, redis: Redis
) -> None:
    """A session ended while this instance heard nothing (its subscription down, the message
    lost) must not leave the session's socket streaming: when the subscription is back, the
    open sockets' sessions are checked against the database."""
    app = live_app()
    async with serve(app) as base_url:
        alice = await register(base_url, "alice")
        bob = await register(base_url, "bob")
        async with open_ws(base_url, alice) as ws, open_ws(base_url, bob) as other:
            assert (await receive(ws))["type"] == "snapshot"
            assert (await receive(other))["type"] == "snapshot"
            # Ended in the database with no revocation heard, as when it was published while
            # this instance's link was down.
            async with committed_database.sessionmaker() as session:
                await session.execute(
                    text("UPDATE auth_sessions SET revoked_at = now() WHERE user_id = :user"),
                    {"user": alice.id},
                )
                await commit(session)
            # The link drops (as in a Redis failover) and the listener subscribes again.
            assert await redis.client_kill_filter(_type="pubsub") >= 1
            assert await closed_with(ws) == 1008
            # Bob's session is live: his socket is kept, and streams again once the hub has
            # resubscribed (it first says so, with a fresh snapshot).
            row = await new_task(committed_database, app, redis, bob.id)
            seen: list[dict[str, Any]] = []

            def shown(message: dict[str, Any]) -> bool:
                # As its own event, or in the snapshot of a resubscription that came later.
                tasks = [message.get("task", {}), *message.get("tasks", [])]
                return any(task.get("id") == str(row.id) for task in tasks)

            while not any(shown(message) for message in seen):
                seen.append(await receive_event(other))
            assert {m["type"] for m in seen} <= {"snapshot", "resync", "task.updated"}, seen


async def test_a_disabled_account_loses_its_api_key_socket(
    live_app: AppFactory, redis: Redis
) -> None:
    app = live_app()
    async with serve(app) as base_url:
        alice = await register(base_url, "alice")
        created = await post_as(alice, base_url, "/api/auth/api-keys", {"name": "ws"})
        assert created.status_code == 201, created.text
        async with open_ws(
            base_url, origin=None, headers={"X-API-Key": created.json()["key"]}
        ) as ws:
            assert (await receive(ws))["type"] == "snapshot"
            # What an admin's change to the account publishes once it has committed.
            await publish_revocation(redis, users=[alice.id])
            assert await closed_with(ws) == 1008


async def test_api_key_authenticates(
    live_app: AppFactory, committed_database: Database, redis: Redis
) -> None:
    app = live_app()
    async with serve(app) as base_url:
        alice = await register(base_url, "alice")
        created = await post_as(alice, base_url, "/api/auth/api-keys", {"name": "ws"})
        assert created.status_code == 201, created.text
        row = await new_task(committed_database, app, redis, alice.id)

        async with open_ws(
            base_url, origin=None, headers={"X-API-Key": created.json()["key"]}
        ) as ws:
            assert snapshot_ids(await receive(ws)) == [str(row.id)]
        bad_key = {"X-API-Key": "atk_" + "x" * 43}
        assert await handshake_status(base_url, origin=None, headers=bad_key) == 403


async def test_reconnect_gets_a_fresh_snapshot(
    live_app: AppFactory, committed_database: Database, redis: Redis
) -> None:
    app = live_app()
    async with serve(app) as base_url:
        alice = await register(base_url, "alice")
        first = await new_task(committed_database, app, redis, alice.id)
        done = await new_task(committed_database, app, redis, alice.id)
        async with open_ws(base_url, alice) as ws:
            assert snapshot_ids(await receive(ws)) == [str(first.id), str(done.id)]

        # Changes made while nobody listened, none of them announced.
        await change_task(committed_database, first.id, status=TaskStatus.running, progress=60)
        await change_task(committed_database, done.id, status=TaskStatus.succeeded, progress=100)
        later = await new_task(committed_database, app, redis, alice.id)

        async with open_ws(base_url, alice) as ws:
            snapshot = await receive(ws)
            assert snapshot_ids(snapshot) == [str(first.id), str(later.id)]
            assert (snapshot["tasks"][0]["status"], snapshot["tasks"][0]["progress"]) == (
                "running",
                60,
            )


async def test_pings_are_sent_periodically(live_app: AppFactory) -> None:
    async with serve(live_app(ws_ping_seconds=0.2)) as base_url:
        alice = await register(base_url, "alice")
        async with open_ws(base_url, alice) as ws:
            assert (await receive(ws))["type"] == "snapshot"
            assert await receive(ws) == {"type": "ping"}
            assert await receive(ws) == {"type": "ping"}


async def test_client_messages_are_ignored_and_leaving_unsubscribes(
    live_app: AppFactory, committed_database: Database, redis: Redis
) -> None:
    app = live_app()
    hub: Hub = app.state.resources.hub
    async with serve(app) as base_url:
        alice = await register(base_url, "alice")
        async with open_ws(base_url, alice) as ws:
            assert (await receive(ws))["type"] == "snapshot"
            await ws.send("hello?")
            await ws.send(b"\x00\x01")
            row = await new_task(committed_database, app, redis, alice.id)
            assert (await receive_event(ws))["task"]["id"] == str(row.id)
            assert hub.subscriber_count == 1
        await eventually(lambda: hub.subscriber_count == 0, "the socket's subscription was kept")


async def test_lost_subscription_sends_a_new_snapshot(
    live_app: AppFactory, committed_database: Database, redis: Redis
) -> None:
    app = live_app()
    async with serve(app) as base_url:
        alice = await register(base_url, "alice")
        row = await new_task(committed_database, app, redis, alice.id)
        async with open_ws(base_url, alice) as ws:
            assert snapshot_ids(await receive(ws)) == [str(row.id)]
            # Changed while the subscription is down: its event would be lost.
            await change_task(committed_database, row.id, status=TaskStatus.running, progress=70)
            await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            snapshot = await receive_event(ws)
            assert snapshot_ids(snapshot) == [str(row.id)]
            assert snapshot["tasks"][0]["progress"] == 70


async def test_socket_that_falls_behind_is_closed_with_1013(
    live_app: AppFactory, committed_database: Database, redis: Redis
) -> None:
    app = live_app()
    app.state.resources.hub = Hub(redis, queue_size=1)
    async with serve(app) as base_url:
        alice = await register(base_url, "alice")
        async with committed_database.sessionmaker() as blocker:
            # Stalls the socket's snapshot query, so it cannot drain its queue meanwhile.
            await blocker.execute(text("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE"))
            async with open_ws(base_url, alice) as ws:
                for n in range(3):
                    await redis.publish(CHANNEL, raw_event(alice.id, n))
                await blocker.rollback()
                assert snapshot_ids(await receive(ws)) == []
                with pytest.raises(ConnectionClosed) as closed:
                    await receive(ws)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1013


# --- the hub -------------------------------------------------------------------------------


def raw_event(user_id: uuid.UUID, n: int) -> str:
    return json.dumps(
        {"user_id": str(user_id), "event": {"type": "task.updated", "task": {"n": n}}}
    )


async def next_message(sub: Subscription) -> dict[str, Any]:
    return (await asyncio.wait_for(sub.get(), TIMEOUT)).message


@pytest.fixture
async def hub(redis: Redis) -> AsyncIterator[Hub]:
    hub = Hub(redis)
    yield hub
    await hub.close()


async def test_hub_routes_by_owner(hub: Hub, redis: Redis) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    async with hub.subscribe(alice) as a1, hub.subscribe(alice) as a2, hub.subscribe(bob) as b:
        await redis.publish(CHANNEL, raw_event(alice, 1))
        await redis.publish(CHANNEL, raw_event(bob, 2))
        assert (await next_message(a1))["task"] == {"n": 1}
        assert (await next_message(a2))["task"] == {"n": 1}
        assert (await next_message(b))["task"] == {"n": 2}
        assert (a1.pending(), a2.pending(), b.pending()) == (0, 0, 0)
    assert hub.subscriber_count == 0


async def test_hub_resyncs_after_its_connection_is_killed(hub: Hub, redis: Redis) -> None:
    user = uuid.uuid4()
    async with hub.subscribe(user) as sub:
        await redis.publish(CHANNEL, raw_event(user, 1))
        assert (await next_message(sub))["task"] == {"n": 1}

        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert await next_message(sub) == {"type": "resync"}
        await redis.publish(CHANNEL, raw_event(user, 2))
        assert (await next_message(sub))["task"] == {"n": 2}


async def test_hub_resyncs_after_redis_restarts(tmp_path: Path) -> None:
    server = await asyncio.to_thread(start_redis, tmp_path)
    client = Redis.from_url(server.url)
    hub = Hub(client)
    user = uuid.uuid4()
    try:
        async with hub.subscribe(user) as sub:
            assert hub.connected
            server = await asyncio.to_thread(restart_redis, server)
            message = (await asyncio.wait_for(sub.get(), 20)).message
            assert message == {"type": "resync"}
            await client.publish(CHANNEL, raw_event(user, 7))
            assert (await next_message(sub))["task"] == {"n": 7}
    finally:
        await hub.close()
        await client.aclose()
        server.stop()


async def test_hub_detects_an_unresponsive_link(redis: Redis) -> None:
    hub = Hub(redis, idle_seconds=0.5)
    user = uuid.uuid4()
    try:
        async with hub.subscribe(user) as sub:
            # A quiet but healthy link answers the idle PING and stays as it is.
            await asyncio.sleep(1.6)
            await redis.publish(CHANNEL, raw_event(user, 1))
            assert await next_message(sub) == {"type": "task.updated", "task": {"n": 1}}

            # Redis stops answering (as through a dead NAT mapping) for longer than the window.
            await redis.execute_command("CLIENT", "PAUSE", "2000", "ALL")
            assert await next_message(sub) == {"type": "resync"}
            await redis.publish(CHANNEL, raw_event(user, 2))
            assert (await next_message(sub))["task"] == {"n": 2}
    finally:
        await hub.close()


async def test_hub_ends_a_slow_subscription_without_holding_up_others(redis: Redis) -> None:
    hub = Hub(redis, queue_size=3)
    user = uuid.uuid4()
    try:
        async with AsyncExitStack() as stack:
            slow = await stack.enter_async_context(hub.subscribe(user))
            fast = await stack.enter_async_context(hub.subscribe(user))
            for n in range(6):
                await redis.publish(CHANNEL, raw_event(user, n))
                assert (await next_message(fast))["task"] == {"n": n}
            with pytest.raises(SlowConsumer):
                await slow.get()
            assert hub.subscriber_count == 1
            assert slow.pending() <= 1  # its backlog was released at once
    finally:
        await hub.close()


async def test_hub_sends_straight_to_an_idle_socket_and_queues_what_would_wait(
    hub: Hub, redis: Redis
) -> None:
    # A socket's task waiting in get(direct=send) is not woken per event: the hub sends itself.
    # When the send would wait (the client stopped reading), nothing is lost or reordered.
    user = uuid.uuid4()
    writable = asyncio.Event()
    writable.set()
    sent: list[int] = []
    woken = 0

    async def send(text: str) -> None:
        await writable.wait()
        sent.append(json.loads(text)["task"]["n"])

    async def socket_task(sub: Subscription) -> None:
        nonlocal woken
        while True:
            frame = await sub.get(direct=send_directly(send))
            woken += 1
            await send(frame.text)
            sub.delivered(frame)

    async with hub.subscribe(user) as sub:
        runner = asyncio.create_task(socket_task(sub))
        try:
            await asyncio.sleep(0)
            for n in (1, 2):
                await redis.publish(CHANNEL, raw_event(user, n))
            await eventually(lambda: sent == [1, 2], "the events were not sent")
            assert woken == 0
            writable.clear()
            for n in (3, 4, 5):
                await redis.publish(CHANNEL, raw_event(user, n))
            await eventually(lambda: sub.pending() == 2, "the events were not queued")
            writable.set()
            await eventually(lambda: sent == [1, 2, 3, 4, 5], "the queued events were lost")
            assert woken == 3
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)


async def test_hub_hands_a_failed_direct_send_to_the_socket_task(hub: Hub, redis: Redis) -> None:
    user = uuid.uuid4()

    async def send(_text: str) -> None:
        raise ConnectionResetError("the client has gone")

    async with hub.subscribe(user) as sub, asyncio.timeout(TIMEOUT):
        waiting = asyncio.create_task(sub.get(direct=send_directly(send)))
        await asyncio.sleep(0)
        await redis.publish(CHANNEL, raw_event(user, 1))
        with pytest.raises(ConnectionResetError):
            await waiting


async def test_hub_resync_fits_in_a_full_queue(redis: Redis) -> None:
    hub = Hub(redis, queue_size=2)
    user = uuid.uuid4()
    try:
        async with hub.subscribe(user) as sub:
            for n in range(2):
                await redis.publish(CHANNEL, raw_event(user, n))
            await eventually(lambda: sub.pending() == 2, "the events did not arrive")
            await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            # The snapshot it asks for supersedes the backlog, so the backlog makes room.
            await eventually(lambda: sub.pending() != 2, "no resync after the connection died")
            assert sub.pending() == 1
            assert await next_message(sub) == {"type": "resync"}
    finally:
        await hub.close()


async def test_hub_ignores_malformed_messages(hub: Hub, redis: Redis) -> None:
    user = uuid.uuid4()
    async with hub.subscribe(user) as sub:
        for garbage in (
            "not json",
            "[1, 2]",
            "42",
            json.dumps({"user_id": "not-a-uuid", "event": {"type": "x"}}),
            json.dumps({"user_id": 5, "event": {"type": "x"}}),
            json.dumps({"user_id": str(user)}),
            json.dumps({"user_id": str(user), "event": "oops"}),
            json.dumps({"user_id": str(user), "event": {"no": "type"}}),
            b"\xff\xfe",
        ):
            await redis.publish(CHANNEL, garbage)
        await redis.publish(CHANNEL, raw_event(user, 1))
        assert await next_message(sub) == {"type": "task.updated", "task": {"n": 1}}
        assert hub.connected


async def test_hub_close_ends_subscriptions_and_its_reader(redis: Redis) -> None:
    def readers() -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks() if t.get_name() == "realtime-hub-reader"}

    hub = Hub(redis)
    user = uuid.uuid4()
    before = readers()
    async with hub.subscribe(user) as sub:
        (reader,) = readers() - before
        waiting = asyncio.create_task(sub.get())
        await asyncio.sleep(0)
        await asyncio.wait_for(hub.close(), TIMEOUT)
        with pytest.raises(HubClosed):
            await asyncio.wait_for(waiting, TIMEOUT)
    assert reader.done()
    with pytest.raises(HubClosed):
        async with hub.subscribe(user):
            pass


async def test_hub_waits_for_redis_then_resyncs_early_subscribers(tmp_path: Path) -> None:
    # Redis is not there yet: the subscriber goes ahead after ready_timeout, reads its snapshot,
    # and must be told to read another once the subscription finally exists.
    server = await asyncio.to_thread(start_redis, tmp_path)
    port = server.port
    server.stop()
    client = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    hub = Hub(client, ready_timeout=0.3)
    user = uuid.uuid4()
    try:
        async with hub.subscribe(user) as sub:
            assert not hub.connected
            server = await asyncio.to_thread(restart_redis, server)
            assert (await asyncio.wait_for(sub.get(), 20)).message == {"type": "resync"}
            assert hub.connected
    finally:
        await hub.close()
        await client.aclose()
        server.stop()


@pytest.mark.embedded
async def test_hub_works_on_embedded_redis() -> None:
    redis = create_redis(None)
    hub = Hub(redis)
    user = uuid.uuid4()
    try:
        async with hub.subscribe(user) as sub:
            assert hub.connected
            await redis.publish(CHANNEL, raw_event(user, 3))
            assert await next_message(sub) == {"type": "task.updated", "task": {"n": 3}}
    finally:
        await hub.close()
        with contextlib.suppress(Exception):
            await redis.aclose()
