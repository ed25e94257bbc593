"""Shared fixtures: real Postgres, Redis and S3 servers, the app on them, signed-in clients.

Servers start once per session on free loopback ports; each test runs inside a transaction that
is rolled back afterwards (requests commit to savepoints), and Redis is flushed before each
test. With CI=true a server that cannot start fails the run instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from backend.composition import AppResources
from backend.config import Settings
from backend.core.db import Database
from backend.core.migrations import upgrade
from backend.main import create_app
from backend.models import Base
from tests.servers import (
    BinaryNotFound,
    S3Server,
    Server,
    ServerUnavailable,
    start_postgres,
    start_redis,
    start_seaweedfs,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TEST_SECRET = "test-secret-" + "x" * 40
PASSWORD = "correct horse battery"


def _unavailable(exc: ServerUnavailable) -> None:
    # Only a binary that is not installed may skip, and only outside CI; a server that is
    # installed but fails to start is a real failure everywhere.
    if isinstance(exc, BinaryNotFound) and not IN_CI:
        pytest.skip(f"test server not installed: {exc}")
    pytest.fail(f"required test server unavailable: {exc}", pytrace=False)


def _start(starter: Callable[[Path], Server], workdir: Path) -> Server:
    try:
        return starter(workdir)
    except ServerUnavailable as exc:
        _unavailable(exc)
        raise  # unreachable: fail/skip raise


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = _start(start_postgres, tmp_path_factory.mktemp("postgres"))
    try:
        upgrade(server.url)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = _start(start_redis, tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    try:
        server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    except ServerUnavailable as exc:
        _unavailable(exc)
        raise
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def pg_engine(pg_server: Server) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(pg_server.url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def db_conn(pg_engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with pg_engine.connect() as conn:
        transaction = await conn.begin()
        try:
            yield conn
        finally:
            await transaction.rollback()


@pytest.fixture
def database(db_conn: AsyncConnection, pg_server: Server) -> Database:
    return Database(pg_server.url, bind=db_conn)


@pytest.fixture
async def redis(redis_server: Server) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def settings(pg_server: Server, redis_server: Server, tmp_path: Path) -> Settings:
    return Settings(
        env="test",
        secret_key=TEST_SECRET,
        database_url=pg_server.url,
        redis_url=redis_server.url,
        storage_url=f"file://{tmp_path / 'storage'}",
        log_json=True,
    )


@pytest.fixture
async def committed_database(pg_server: Server) -> AsyncIterator[Database]:
    """A database whose commits are real, for tests where other connections or processes
    (a worker, a second API instance, a WebSocket) must see the data; emptied afterwards."""
    db = Database(pg_server.url, pool_size=5)
    yield db
    async with db.sessionmaker() as session:
        tables = ", ".join(f'"{table.name}"' for table in reversed(Base.metadata.sorted_tables))
        await session.execute(text(f"TRUNCATE {tables} CASCADE"))
        await session.commit()
    await db.dispose()


AppFactory = Callable[..., FastAPI]


@pytest.fixture
def make_app(settings: Settings, database: Database, redis: Redis) -> AppFactory:
    """Build app instances sharing the test's servers and transaction (a second API instance
    for cross-instance tests is just a second call)."""

    def factory(**overrides: object) -> FastAPI:
        app_settings = settings.model_copy(update=overrides) if overrides else settings
        return create_app(
            app_settings, resources=AppResources(app_settings, db=database, redis=redis)
        )

    return factory


@pytest.fixture
def make_live_app(settings: Settings, committed_database: Database, redis: Redis) -> AppFactory:
    """Like ``make_app`` but on ``committed_database``: serve these with ``tests.live.serve``."""

    def factory(**overrides: object) -> FastAPI:
        app_settings = settings.model_copy(update=overrides) if overrides else settings
        resources = AppResources(app_settings, db=committed_database, redis=redis)
        return create_app(app_settings, resources=resources)

    return factory


@pytest.fixture
def app(make_app: AppFactory) -> FastAPI:
    return make_app()


async def make_embedded_app(folder: Path, **overrides: object) -> FastAPI:
    """The embedded stack (`make run`'s): SQLite, in-process Redis, a local folder, migrated."""
    settings = Settings(
        env="test",
        secret_key=TEST_SECRET,
        database_url=f"sqlite+aiosqlite:///{folder / 'var' / 'atelier.db'}",
        redis_url=None,
        storage_url=f"file://{folder / 'var' / 'storage'}",
        **overrides,  # type: ignore[arg-type]
    )
    await asyncio.to_thread(upgrade, settings.database_url)
    return create_app(settings)


@pytest.fixture(params=["postgres", "sqlite"])
async def app_on_each_database(
    request: pytest.FixtureRequest, tmp_path: Path, make_live_app: AppFactory
) -> AsyncIterator[FastAPI]:
    """The same test on Postgres (committed) and on the embedded SQLite stack."""
    if request.param == "postgres":
        yield make_live_app()
        return
    app = await make_embedded_app(tmp_path)
    yield app
    await app.state.resources.close()


def client_for(app: FastAPI, **kwargs: object) -> httpx.AsyncClient:
    # https, because the cookies are Secure outside dev and httpx honours that.
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 5555)),
        base_url="https://testserver",
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as c:
        yield c


@dataclass
class SignedIn:
    client: httpx.AsyncClient
    user: dict[str, object]
    email: str
    password: str

    @property
    def csrf(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.client.cookies.get("csrf_token") or ""}

    @property
    def id(self) -> str:
        return str(self.user["id"])


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


SignUp = Callable[..., Awaitable[SignedIn]]


@pytest.fixture
async def sign_up(app: FastAPI) -> AsyncIterator[SignUp]:
    """Register a fresh user in a client of their own; returns the signed-in client."""
    opened: list[httpx.AsyncClient] = []

    async def factory(tag: str = "user", *, on: FastAPI | None = None) -> SignedIn:
        email = unique_email(tag)
        c = client_for(on or app)
        opened.append(c)
        answer = await c.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        assert answer.status_code == 201, answer.text
        return SignedIn(c, answer.json(), email, PASSWORD)

    yield factory
    for c in opened:
        await c.aclose()


@pytest.fixture
async def alice(sign_up: SignUp) -> SignedIn:
    return await sign_up("alice")


@pytest.fixture
async def bob(sign_up: SignUp) -> SignedIn:
    return await sign_up("bob")


@pytest.fixture
async def admin(sign_up: SignUp, database: Database) -> SignedIn:
    from sqlalchemy import update

    from backend.auth.models import Role, User

    signed = await sign_up("admin")
    async with database.sessionmaker() as session:
        await session.execute(
            update(User).where(User.id == uuid.UUID(signed.id)).values(role=Role.admin)
        )
        await session.commit()
    signed.user["role"] = "admin"
    return signed


def random_secret() -> str:
    return secrets.token_urlsafe(48)
