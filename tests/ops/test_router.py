"""Health with real dependency checks, liveness, and Prometheus metrics."""

from __future__ import annotations

import httpx

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


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/api/auth/me")
    await client.delete("/api/auth/api-keys/00000000-0000-0000-0000-000000000000")
    await client.get("/totally/unknown/path")
    text = (await client.get("/metrics")).text
    assert 'atelier_http_requests_total{method="GET",route="/api/auth/me",status="401"}' in text
    # Labelled by template, never by the concrete id.
    assert 'route="/api/auth/api-keys/{key_id}"' in text
    assert "00000000-0000" not in text
    assert 'route="<unmatched>"' in text
    assert "atelier_http_request_duration_seconds_bucket" in text
