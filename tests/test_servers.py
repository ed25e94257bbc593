"""The throwaway-server launchers in tests/servers.py start real, usable servers."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import redis

from tests.servers import (
    BinaryNotFound,
    S3Server,
    Server,
    ServerUnavailable,
    free_port,
    restart_redis,
    start_postgres,
    start_redis,
    start_seaweedfs,
)

_S = TypeVar("_S", bound=Server)


def _launch(start: Callable[[Path], _S], workdir: Path) -> _S:
    try:
        return start(workdir)
    except BinaryNotFound as exc:
        # CI images are supposed to carry every server; a silent skip there
        # would hide that the real-server suite never ran.
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{exc}", pytrace=False)
        pytest.skip(f"{exc}")


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Server]:
    server = _launch(start_postgres, tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Server]:
    server = _launch(start_redis, tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = _launch(start_seaweedfs, tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_postgres_accepts_queries_on_the_given_url(postgres: Server) -> None:
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

    assert postgres.url.startswith("postgresql+asyncpg://atelier@127.0.0.1:")
    dsn = postgres.url.replace("+asyncpg", "", 1)

    async def round_trip() -> tuple[int, str, str, list[str]]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            one = await conn.fetchval("SELECT 1")
            db, user = await conn.fetchrow("SELECT current_database(), current_user")
            await conn.execute("CREATE TABLE t (name text)")
            await conn.executemany("INSERT INTO t VALUES ($1)", [("a",), ("b",)])
            names = [r["name"] for r in await conn.fetch("SELECT name FROM t ORDER BY name")]
            return one, db, user, names
        finally:
            await conn.close()

    assert asyncio.run(round_trip()) == (1, "atelier", "atelier", ["a", "b"])


def test_server_stop_is_idempotent_and_frees_the_port(postgres: Server) -> None:
    postgres.stop()
    postgres.stop()
    assert postgres.proc.returncode is not None
    assert not _accepts_connections(postgres.port)


def test_redis_set_get(redis_server: Server) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.set("greeting", "bonjour")
        assert client.get("greeting") == b"bonjour"
    finally:
        client.close()


def test_restart_redis_keeps_port_and_answers(redis_server: Server) -> None:
    before = redis.Redis.from_url(redis_server.url)
    try:
        before.set("survives", "no")
    finally:
        before.close()

    restarted = restart_redis(redis_server)
    try:
        assert restarted.port == redis_server.port
        assert restarted.url == redis_server.url
        assert restarted.workdir == redis_server.workdir
        assert restarted.pid != redis_server.pid
        assert redis_server.proc.returncode is not None
        after = redis.Redis.from_url(restarted.url)
        try:
            assert after.ping() is True
            # Persistence is off: a restart behaves like a Redis that lost its data.
            assert after.get("survives") is None
        finally:
            after.close()
    finally:
        restarted.stop()


def test_restart_redis_reports_why_it_failed(redis_server: Server) -> None:
    # Occupying the port makes the real redis-server fail to bind.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        redis_server.stop()
        squatter.bind(("127.0.0.1", redis_server.port))
        squatter.listen()
        with pytest.raises(ServerUnavailable) as excinfo:
            restart_redis(redis_server, timeout=1)
    message = str(excinfo.value)
    assert f"port {redis_server.port}" in message
    assert "Address already in use" in message  # the server's own log line


def test_seaweedfs_put_and_get_object(seaweedfs: S3Server) -> None:
    assert seaweedfs.url == seaweedfs.endpoint_url
    assert seaweedfs.endpoint_url.startswith("http://127.0.0.1:")
    assert (seaweedfs.bucket, seaweedfs.region) == ("atelier", "us-east-1")
    s3 = seaweedfs.client()
    try:
        s3.put_object(Bucket=seaweedfs.bucket, Key="dir/hello.txt", Body=b"hello, world")
        body = s3.get_object(Bucket=seaweedfs.bucket, Key="dir/hello.txt")["Body"].read()
        assert body == b"hello, world"
    finally:
        s3.close()


@pytest.mark.parametrize(
    ("access_key", "secret_key"),
    [(None, "not-the-secret"), ("AKUNKNOWN0000000000", "not-the-secret")],
    ids=["wrong-secret", "unknown-key"],
)
def test_seaweedfs_rejects_badly_signed_requests(
    seaweedfs: S3Server, access_key: str | None, secret_key: str
) -> None:
    from botocore.exceptions import ClientError  # type: ignore[import-untyped,unused-ignore]

    forged = S3Server(
        url=seaweedfs.url,
        proc=seaweedfs.proc,
        workdir=seaweedfs.workdir,
        endpoint_url=seaweedfs.endpoint_url,
        access_key=access_key or seaweedfs.access_key,
        secret_key=secret_key,
        bucket=seaweedfs.bucket,
    ).client()
    try:
        with pytest.raises(ClientError) as excinfo:
            forged.put_object(Bucket=seaweedfs.bucket, Key="forged.txt", Body=b"x")
    finally:
        forged.close()
    assert excinfo.value.response["Error"]["Code"] in {
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "AccessDenied",
    }


def test_seaweedfs_rejects_anonymous_requests(seaweedfs: S3Server) -> None:
    url = f"{seaweedfs.endpoint_url}/{seaweedfs.bucket}/anonymous.txt"
    assert httpx.put(url, content=b"x").status_code == 403
    assert httpx.get(url).status_code == 403


def test_seaweedfs_enforces_presigned_post_policy(seaweedfs: S3Server) -> None:
    s3 = seaweedfs.client()
    try:

        def post(key: str, body: bytes) -> httpx.Response:
            form = s3.generate_presigned_post(
                seaweedfs.bucket,
                key,
                Conditions=[["content-length-range", 1, 10]],
                ExpiresIn=60,
            )
            return httpx.post(form["url"], data=form["fields"], files={"file": ("f", body)})

        too_big = post("policy/too-big", b"x" * 20)
        assert 400 <= too_big.status_code < 500, too_big.text
        assert "EntityTooLarge" in too_big.text
        assert s3.list_objects_v2(Bucket=seaweedfs.bucket, Prefix="policy/")["KeyCount"] == 0

        # The same form with a body inside the range goes through, so the
        # rejection above came from the policy and not from the signature.
        fits = post("policy/fits", b"x" * 5)
        assert fits.status_code in (200, 201, 204), fits.text
        stored = s3.get_object(Bucket=seaweedfs.bucket, Key="policy/fits")["Body"].read()
        assert stored == b"x" * 5
    finally:
        s3.close()
