"""Health with real dependency checks, liveness, and Prometheus metrics."""

from __future__ import annotations

import socket
import time

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from backend.composition import AppResources
from backend.config import Settings
from backend.main import create_app
from tests.conftest import AppFactory, client_for
from tests.servers import S3Server, free_port


async def test_health_reports_every_dependency(client: httpx.AsyncClient) -> None:
    answer = await client.get("/health")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "redis": "ok", "storage": "ok"}
    assert body["version"]
    assert body["uptime_seconds"] >= 0


async def test_health_is_503_when_redis_is_down(settings: Settings, database: object) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    app = create_app(down, resources=AppResources(down, db=database))  # type: ignore[arg-type]
    async with client_for(app) as c:
        answer = await c.get("/health")
    assert answer.status_code == 503
    assert answer.json()["checks"] == {"database": "ok", "redis": "down", "storage": "ok"}
    await app.state.resources.close()


async def test_health_is_503_when_database_and_storage_are_down(
    settings: Settings, tmp_path: object
) -> None:
    blocker = f"{tmp_path}/not-a-dir"
    with open(blocker, "w") as fh:
        fh.write("a file where the storage folder should be")
    down = settings.model_copy(
        update={
            "database_url": f"postgresql+asyncpg://atelier@127.0.0.1:{free_port()}/atelier",
            "storage_url": f"file://{blocker}",
        }
    )
    app = create_app(down)
    async with client_for(app) as c:
        answer = await c.get("/health")
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "degraded"
    assert body["checks"] == {"database": "down", "redis": "ok", "storage": "down"}
    await app.state.resources.close()


async def test_health_checks_s3_storage(make_app: AppFactory, s3_server: S3Server) -> None:
    url = (
        f"s3://{s3_server.bucket}?endpoint_url={s3_server.endpoint_url}&region={s3_server.region}"
        f"&access_key={s3_server.access_key}&secret_key={s3_server.secret_key}"
    )
    async with client_for(make_app(storage_url=url)) as c:
        assert (await c.get("/health")).json()["checks"]["storage"] == "ok"
    missing_bucket = url.replace(f"s3://{s3_server.bucket}", "s3://no-such-bucket")
    async with client_for(make_app(storage_url=missing_bucket)) as c:
        answer = await c.get("/health")
        assert answer.status_code == 503
        assert answer.json()["checks"]["storage"] == "down"


async def test_healthz_needs_nothing(client: httpx.AsyncClient) -> None:
    answer = await client.get("/healthz")
    assert answer.json() == {"status": "ok"}


METRICS_TOKEN = "scrape-" + "m" * 40


async def test_metrics_are_not_served_without_a_token_setting(client: httpx.AsyncClient) -> None:
    answer = await client.get("/metrics")
    assert answer.status_code == 404
    assert answer.json()["code"] == "http.not_found"
    assert "atelier_" not in answer.text


def test_an_empty_metrics_token_turns_metrics_off() -> None:
    assert Settings(env="test", secret_key="x" * 40, metrics_token="").metrics_token is None


async def test_metrics_need_the_bearer_token(make_app: AppFactory) -> None:
    async with client_for(make_app(metrics_token=SecretStr(METRICS_TOKEN))) as c:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": f"Basic {METRICS_TOKEN}"},
            {"Authorization": f"Bearer {METRICS_TOKEN}x"},
        ):
            answer = await c.get("/metrics", headers=headers)
            assert answer.status_code == 401, headers
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["code"] == "metrics.unauthorized"
            assert "atelier_http_requests_total" not in answer.text
        good = await c.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert good.status_code == 200
        assert good.headers["content-type"].startswith("text/plain")


async def test_metrics_count_requests_by_route_template(make_app: AppFactory) -> None:
    client = client_for(make_app(metrics_token=SecretStr(METRICS_TOKEN)))
    async with client:
        await client.get("/api/auth/me")
        await client.delete("/api/auth/api-keys/00000000-0000-0000-0000-000000000000")
        await client.get("/totally/unknown/path")
        # A method token of the client's own making must not become a series of its own.
        await client.request("MADEUP7", "/api/auth/me")
        scrape = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        text = scrape.text
    assert 'atelier_http_requests_total{method="GET",route="/api/auth/me",status="401"}' in text
    # Labelled by template, never by the concrete id.
    assert 'route="/api/auth/api-keys/{key_id}"' in text
    assert "00000000-0000" not in text
    assert 'route="<unmatched>"' in text
    assert 'method="OTHER"' in text
    assert "MADEUP7" not in text
    assert "atelier_http_request_duration_seconds_bucket" in text
    assert "atelier_queue_depth 0.0" in text


async def test_readyz_is_the_startup_probe_with_dependency_checks(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get("/readyz")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "redis": "ok", "storage": "ok"}


async def test_readyz_answers_503_while_redis_hangs(settings: Settings, database: object) -> None:
    # A listener that completes the TCP handshake and never answers: the way a network path that
    # is not up yet looks. The probe must still answer, with Redis down, instead of hanging.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    hanging = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    app = create_app(hanging, resources=AppResources(hanging, db=database))  # type: ignore[arg-type]
    try:
        async with client_for(app) as c:
            started = time.monotonic()
            answer = await c.get("/readyz")
            elapsed = time.monotonic() - started
        assert answer.status_code == 503
        assert answer.json()["checks"] == {"database": "ok", "redis": "down", "storage": "ok"}
        # Bounded by the check timeout, not by the client's; generous for a loaded machine.
        assert elapsed < 15
        assert (await _healthz(app)) == 200
    finally:
        silent.close()
        await app.state.resources.close()


async def _healthz(app: FastAPI) -> int:
    async with client_for(app) as c:
        return (await c.get("/healthz")).status_code
