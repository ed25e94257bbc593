"""Live sessions cached per instance, revoked on every instance at once through real Redis.

Two app instances share one Postgres (committed) and one Redis, as two Cloud Run instances do.
A session one of them has cached must stop working there as soon as another instance's logout
(or an admin's change) has answered, not when the cache entry expires.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import update

from backend.auth.deps import session_cache
from backend.auth.models import AuthSession, Role, User
from backend.auth.sessions import Principal, SessionCache
from backend.core.db import Database, utcnow
from tests.auth.test_router import assert_problem
from tests.conftest import PASSWORD, AppFactory, client_for, unique_email
from tests.servers import free_port


@pytest.fixture
async def two_instances(make_live_app: AppFactory) -> AsyncIterator[tuple[FastAPI, FastAPI]]:
    first, second = make_live_app(), make_live_app()
    try:
        yield first, second
    finally:
        for app in (first, second):
            await app.state.resources.close()


async def register(app: FastAPI) -> tuple[dict[str, str], str]:
    """A new account's cookie and CSRF headers (for any instance), and its id."""
    async with client_for(app) as client:
        answer = await client.post(
            "/api/auth/register", json={"email": unique_email(), "password": PASSWORD}
        )
        assert answer.status_code == 201, answer.text
        access, csrf = client.cookies["access_token"], client.cookies["csrf_token"]
    headers = {"Cookie": f"access_token={access}; csrf_token={csrf}", "X-CSRF-Token": csrf}
    return headers, str(answer.json()["id"])


async def ask(
    app: FastAPI, method: str, path: str, headers: dict[str, str], **kwargs: object
) -> httpx.Response:
    async with client_for(app) as client:
        return await client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]


async def cached_on(app: FastAPI, headers: dict[str, str]) -> SessionCache:
    """Use the session on ``app`` until its cache holds it (its listener subscribes first)."""
    cache = session_cache(app.state.resources)
    for _ in range(200):
        answer = await ask(app, "GET", "/api/auth/me", headers)
        assert answer.status_code == 200, answer.text
        if len(cache):
            return cache
        await asyncio.sleep(0.025)
    raise AssertionError("the session never entered the cache")


async def revoke_in_database(db: Database, user_id: str) -> None:
    """End the user's sessions behind the app's back (no revocation published)."""
    async with db.sessionmaker() as session:
        await session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == uuid.UUID(user_id))
            .values(revoked_at=utcnow(), revoked_reason="test")
        )
        await session.commit()


async def test_logout_on_one_instance_is_refused_on_the_other_at_once(
    two_instances: tuple[FastAPI, FastAPI],
) -> None:
    first, second = two_instances
    headers, _ = await register(first)
    await cached_on(first, headers)
    other = await cached_on(second, headers)
    assert (await ask(second, "GET", "/api/images", headers)).status_code == 200

    assert (await ask(first, "POST", "/api/auth/logout", headers)).status_code == 204

    # No wait: the logout answered only once the other instance had dropped the session.
    assert len(other) == 0
    for path in ("/api/auth/me", "/api/images"):
        assert_problem(await ask(second, "GET", path, headers), 401, "auth.session_revoked")
    assert_problem(await ask(first, "GET", "/api/auth/me", headers), 401, "auth.session_revoked")


async def test_admin_changes_reach_the_other_instance_at_once(
    two_instances: tuple[FastAPI, FastAPI], committed_database: Database
) -> None:
    first, second = two_instances
    admin, admin_id = await register(first)
    async with committed_database.sessionmaker() as session:
        await session.execute(
            update(User).where(User.id == uuid.UUID(admin_id)).values(role=Role.admin)
        )
        await session.commit()
    headers, user_id = await register(first)
    await cached_on(second, headers)

    patch = f"/api/admin/users/{user_id}"
    promoted = await ask(first, "PATCH", patch, admin, json={"role": "admin"})
    assert promoted.status_code == 200, promoted.text
    me = await ask(second, "GET", "/api/auth/me", headers)
    assert me.json()["role"] == "admin"

    await cached_on(second, headers)
    disabled = await ask(first, "PATCH", patch, admin, json={"disabled": True})
    assert disabled.status_code == 200, disabled.text
    answer = await ask(second, "GET", "/api/images", headers)
    assert_problem(answer, 401, "auth.session_revoked")


async def test_cached_session_is_served_from_memory_until_its_ttl(
    make_live_app: AppFactory, committed_database: Database
) -> None:
    """What the revocations guard against: a change made behind the app's back (no message)
    is seen only once the entry expires; with the cache off, at once."""
    cached, uncached = (
        make_live_app(session_cache_seconds=0.5),
        make_live_app(session_cache_seconds=0),
    )
    try:
        headers, user_id = await register(cached)
        await cached_on(cached, headers)
        assert (await ask(uncached, "GET", "/api/auth/me", headers)).status_code == 200
        await revoke_in_database(committed_database, user_id)

        assert (await ask(cached, "GET", "/api/auth/me", headers)).status_code == 200
        answer = await ask(uncached, "GET", "/api/auth/me", headers)
        assert_problem(answer, 401, "auth.session_revoked")
        await asyncio.sleep(0.6)
        answer = await ask(cached, "GET", "/api/auth/me", headers)
        assert_problem(answer, 401, "auth.session_revoked")
    finally:
        for app in (cached, uncached):
            await app.state.resources.close()


async def test_a_lost_subscription_empties_the_cache(
    two_instances: tuple[FastAPI, FastAPI], committed_database: Database, redis: Redis
) -> None:
    """Revocations sent while an instance is not listening are missed: what it cached is
    dropped when the link goes, so its next requests read the database."""
    first, _ = two_instances
    headers, user_id = await register(first)
    cache = await cached_on(first, headers)

    killed = await redis.client_kill_filter(_type="pubsub")
    assert killed >= 1
    for _ in range(100):
        if len(cache) == 0:
            break
        await asyncio.sleep(0.02)
    assert len(cache) == 0
    await revoke_in_database(committed_database, user_id)
    answer = await ask(first, "GET", "/api/auth/me", headers)
    assert_problem(answer, 401, "auth.session_revoked")


async def test_without_redis_nothing_is_trusted() -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}", socket_connect_timeout=0.2)
    cache = SessionCache(dead, ttl=30)
    session_id, user_id = uuid.uuid4(), uuid.uuid4()
    principal = Principal(user_id, "x@example.com", None, Role.user, utcnow())
    try:
        assert cache.get(session_id, user_id) is None  # starts the listener
        await asyncio.sleep(0.3)
        cache.put(session_id, principal, generation=cache.generation)
        assert not cache.trusted()
        assert cache.get(session_id, user_id) is None
        assert len(cache) == 0
    finally:
        await cache.close()
        await dead.aclose()


async def test_a_read_older_than_a_revocation_is_not_cached(redis: Redis) -> None:
    cache = SessionCache(redis, ttl=30)
    session_id, user_id = uuid.uuid4(), uuid.uuid4()
    principal = Principal(user_id, "x@example.com", None, Role.user, utcnow())
    try:
        cache.get(session_id, user_id)
        for _ in range(200):
            if cache.trusted():
                break
            await asyncio.sleep(0.01)
        assert cache.trusted()
        generation = cache.generation  # a request starts its database read here…
        await cache.revoke(sessions=[session_id])  # …a logout commits meanwhile…
        cache.put(session_id, principal, generation=generation)  # …and the read ends
        assert cache.get(session_id, user_id) is None
        cache.put(session_id, principal, generation=cache.generation)
        assert cache.get(session_id, user_id) == principal
    finally:
        await cache.close()


async def test_resubscribing_rechecks_what_open_sockets_hold(redis: Redis) -> None:
    """Each (re)subscription asks the database about the watched sessions and users: those it
    says ended are told, the others kept; a recheck that fails changes nothing."""
    ended_session, kept_session, key_user = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    asked: list[tuple[set[uuid.UUID], set[uuid.UUID]]] = []
    failing = False

    async def recheck(
        sessions: set[uuid.UUID], users: set[uuid.UUID]
    ) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
        asked.append((sessions, users))
        if failing:
            raise OSError("database down")
        return {ended_session} & sessions, set()

    cache = SessionCache(redis, ttl=30, recheck=recheck)
    try:
        with (
            cache.watch(ended_session, uuid.uuid4()) as first,
            cache.watch(kept_session, uuid.uuid4()) as second,
            cache.watch(None, key_user) as by_key,
        ):
            await eventually(lambda: first.is_set(), "the ended session's socket was not told")
            assert asked[0] == ({ended_session, kept_session}, {key_user})
            assert not second.is_set()
            assert not by_key.is_set()
            failing = True
            await redis.client_kill_filter(_type="pubsub")
            await eventually(lambda: len(asked) >= 2, "no recheck after resubscribing")
            await asyncio.sleep(0.1)
            assert not second.is_set()
            assert not by_key.is_set()
    finally:
        await cache.close()


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)
    assert condition(), what
