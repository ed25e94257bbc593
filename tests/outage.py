"""Servers of a test module's own that tests may stop and start again: dependency outages.

The session's shared Postgres and Redis must stay up for every other test, so outage tests
import these fixtures instead (``from tests.outage import outage_postgres  # noqa: F401``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.core.migrations import upgrade
from tests.servers import (
    PostgresServer,
    Server,
    ServerUnavailable,
    restart_postgres,
    restart_redis,
    start_postgres,
    start_redis,
)


class Restartable:
    """One server, stopped and started again on the same port (and, for Postgres, data)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.up = True

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        if isinstance(self.server, PostgresServer):
            self.server.halt()
        else:
            self.server.stop()
        self.up = False

    def start(self) -> None:
        if isinstance(self.server, PostgresServer):
            self.server = restart_postgres(self.server)
        else:
            self.server = restart_redis(self.server)
        self.up = True

    def ensure_up(self) -> None:
        if not self.up:
            self.start()

    def close(self) -> None:
        self.server.stop()


def _started(starter: object, workdir: Path) -> Server:
    try:
        return starter(workdir)  # type: ignore[operator]
    except ServerUnavailable as exc:
        pytest.fail(f"outage test server unavailable: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def outage_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restartable]:
    server = Restartable(_started(start_postgres, tmp_path_factory.mktemp("outage-pg")))
    try:
        upgrade(server.url)
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def outage_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restartable]:
    server = Restartable(_started(start_redis, tmp_path_factory.mktemp("outage-redis")))
    yield server
    server.close()
