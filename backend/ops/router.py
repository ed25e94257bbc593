"""Liveness, readiness with dependency checks, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable
from typing import Literal

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from backend.core.errors import NotFound, Unauthorized, problem_responses
from backend.core.resources import ResourcesDep
from backend.tasks import metrics as task_metrics

router = APIRouter(tags=["ops"])
log = structlog.get_logger(__name__)
STARTED = time.monotonic()
# Each dependency check is bounded, so /health itself answers within about a second and a
# half even when a dependency hangs rather than refuses.
CHECK_TIMEOUT_SECONDS = 1.5
# The startup probe allows a little more per check (a first connection through Direct VPC
# egress), still below the probe's own timeout (infra/api-service.yaml).
READY_CHECK_TIMEOUT_SECONDS = 2.0

CheckResult = Literal["ok", "down"]


class HealthChecks(BaseModel):
    database: CheckResult
    redis: CheckResult
    storage: CheckResult


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    checks: HealthChecks
    uptime_seconds: float


async def _check(
    name: str, probe: Awaitable[object], timeout: float = CHECK_TIMEOUT_SECONDS
) -> CheckResult:
    try:
        await asyncio.wait_for(probe, timeout)
        return "ok"
    except Exception as exc:  # any failure of a dependency is "down", never a 500
        log.warning("health_check_failed", check=name, error=f"{type(exc).__name__}: {exc}")
        return "down"


async def _dependencies(resources: ResourcesDep, timeout: float) -> JSONResponse:
    database, redis, storage = await asyncio.gather(
        _check("database", resources.db.ping(), timeout),
        _check("redis", resources.redis.ping(), timeout),
        _check("storage", resources.storage.check(), timeout),
    )
    checks = HealthChecks(database=database, redis=redis, storage=storage)
    healthy = all(value != "down" for value in (database, redis, storage))
    body = Health(
        status="ok" if healthy else "degraded",
        version=resources.settings.version,
        checks=checks,
        uptime_seconds=round(time.monotonic() - STARTED, 3),
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if healthy else 503)


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "A dependency is down"}},
)
async def health(resources: ResourcesDep) -> JSONResponse:
    """Every dependency checked (database, Redis, storage): for monitoring and dashboards."""
    return await _dependencies(resources, CHECK_TIMEOUT_SECONDS)


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "A dependency is not reachable yet"}},
)
async def readyz(resources: ResourcesDep) -> JSONResponse:
    """The startup probe: 200 only once the database, Redis and storage answer.

    Checks are short so one probe fits its own timeout; the probe's failure threshold, not a
    long check, gives a slow network path (Direct VPC egress) time to come up.
    """
    return await _dependencies(resources, READY_CHECK_TIMEOUT_SECONDS)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
        **problem_responses(401, 404),
    },
)
async def metrics(resources: ResourcesDep, request: Request) -> Response:
    """Prometheus metrics for a scraper holding ``ATELIER_METRICS_TOKEN`` as a bearer token."""
    token = resources.settings.metrics_token
    authorization = request.headers.get("authorization")
    if token is None:
        # Not enabled: answered like any unknown path, so the API port reveals nothing.
        raise NotFound("Not Found", code="http.not_found")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.get_secret_value().encode()
    ):
        raise Unauthorized(
            "Metrics need `Authorization: Bearer <ATELIER_METRICS_TOKEN>`.",
            code="metrics.unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    await task_metrics.refresh(resources)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
