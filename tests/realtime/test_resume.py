"""Nothing is missed across reconnects: ``/ws?since=<cursor>`` resumes where a socket left off.

Real uvicorn, Redis and committed Postgres, as in ``test_ws``; rows change the way workers
change them, and Redis may even be flushed in the gap: the rows are what the snapshot reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from backend.composition import AppResources
from backend.core.db import Database
from backend.main import create_app
from backend.tasks.events import publish
from backend.tasks.models import TaskStatus
from tests.conftest import AppFactory
from tests.live import serve
from tests.outage import Restartable, outage_postgres  # noqa: F401 - fixture
from tests.realtime.test_ws import (
    GOOD_ORIGIN,
    TIMEOUT,
    LiveUser,
    change_task,
    live_app,  # noqa: F401 - fixture
    new_task,
    receive,
    receive_event,
    register,
    snapshot_ids,
)


@asynccontextmanager
async def open_ws_since(
    base_url: str, user: LiveUser, since: str | None
) -> AsyncIterator[ClientConnection]:
    url = base_url.replace("http://", "ws://", 1) + "/ws"
    if since is not None:
        url += f"?since={since}"
    headers = {"Cookie": user.cookie_header, "Origin": GOOD_ORIGIN}
    async with connect(url, additional_headers=headers, open_timeout=TIMEOUT) as ws:
        yield ws


def by_id(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in snapshot["tasks"]}


async def test_resume_after_a_gap_delivers_every_final_state(
    live_app: AppFactory,  # noqa: F811
    committed_database: Database,
    redis: Redis,
) -> None:
    app = live_app()
    async with serve(app) as base_url:
        alice = await register(base_url, "alice")
        bob = await register(base_url, "bob")
        rows = [await new_task(committed_database, app, redis, alice.id) for _ in range(4)]
        untouched = await new_task(committed_database, app, redis, alice.id)
        foreign = await new_task(committed_database, app, redis, bob.id)
        async with open_ws_since(base_url, alice, None) as ws:
            first = await receive(ws)
            assert first["resumed"] is False
            cursor = first["cursor"]
            # Events carry cursors too; a client keeps the last one it received.
            running = await change_task(
                committed_database, rows[0].id, status=TaskStatus.running, progress=10
            )
            await publish(redis, running)
            event = await receive_event(ws)
            assert event["task"]["id"] == str(rows[0].id)
            assert int(event["cursor"]) >= int(cursor)
            cursor = event["cursor"]

        # The gap: every task ends, none of it announced, and Redis forgets everything.
        finals = {
            rows[0].id: TaskStatus.succeeded,
            rows[1].id: TaskStatus.failed,
            rows[2].id: TaskStatus.canceled,
            rows[3].id: TaskStatus.succeeded,
        }
        for task_id, status in finals.items():
            await change_task(committed_database, task_id, status=status, progress=100)
        born_and_done = await new_task(committed_database, app, redis, alice.id)
        await change_task(committed_database, born_and_done.id, status=TaskStatus.succeeded)
        await change_task(committed_database, foreign.id, status=TaskStatus.succeeded)
        await redis.flushall()

        async with open_ws_since(base_url, alice, cursor) as ws:
            snapshot = await receive(ws)
        assert snapshot["resumed"] is True
        got = by_id(snapshot)
        for task_id, status in finals.items():
            assert got[str(task_id)]["status"] == status.value
        assert got[str(born_and_done.id)]["status"] == "succeeded"
        assert got[str(untouched.id)]["status"] == "queued"  # still active
        assert str(foreign.id) not in got  # never another user's

        # Without a cursor: the active tasks only, as before.
        async with open_ws_since(base_url, alice, None) as ws:
            plain = await receive(ws)
        assert snapshot_ids(plain) == [str(untouched.id)]
        assert plain["resumed"] is False


async def test_a_malformed_cursor_is_ignored(
    live_app: AppFactory,  # noqa: F811
    committed_database: Database,
    redis: Redis,
) -> None:
    app = live_app()
    async with serve(app) as base_url:
        alice = await register(base_url, "alice")
        row = await new_task(committed_database, app, redis, alice.id)
        done = await new_task(committed_database, app, redis, alice.id)
        await change_task(committed_database, done.id, status=TaskStatus.succeeded)
        for since in ("yesterday", "-5", "9" * 40, ""):
            async with open_ws_since(base_url, alice, since) as ws:
                snapshot = await receive(ws)
            assert snapshot_ids(snapshot) == [str(row.id)], since
            assert snapshot["resumed"] is False


async def test_resync_on_a_live_socket_includes_tasks_that_finished_meanwhile(
    live_app: AppFactory,  # noqa: F811
    committed_database: Database,
    redis: Redis,
) -> None:
    app = live_app()
    async with serve(app) as base_url:
        alice = await register(base_url, "alice")
        row = await new_task(committed_database, app, redis, alice.id)
        async with open_ws_since(base_url, alice, None) as ws:
            assert snapshot_ids(await receive(ws)) == [str(row.id)]
            # Finished while the event subscription is down: its event is lost.
            await change_task(committed_database, row.id, status=TaskStatus.succeeded)
            await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            snapshot = await receive_event(ws)
            assert snapshot["type"] == "snapshot"
            assert by_id(snapshot)[str(row.id)]["status"] == "succeeded"


async def test_database_outage_closes_with_try_again_later_and_refuses_new_sockets(
    settings: Any,
    redis: Redis,
    outage_postgres: Restartable,  # noqa: F811
) -> None:
    outage_postgres.ensure_up()
    app_settings = settings.model_copy(update={"database_url": outage_postgres.url})
    app = create_app(app_settings, resources=AppResources(app_settings, redis=redis))
    try:
        async with serve(app) as base_url:
            alice = await register(base_url, "alice")
            async with open_ws_since(base_url, alice, None) as ws:
                assert (await receive(ws))["type"] == "snapshot"
                outage_postgres.stop()
                # Events may have been lost: the socket must re-read, and cannot.
                await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
                with pytest.raises(ConnectionClosed) as closed:
                    await receive_event(ws)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1013
            # A new socket cannot even be authenticated: refused with a 503, before the upgrade.
            with pytest.raises(InvalidStatus) as refused:
                async with open_ws_since(base_url, alice, None):
                    pass
            assert refused.value.response.status_code == 503
    finally:
        outage_postgres.ensure_up()
        await app.state.resources.close()
