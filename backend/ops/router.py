"""Liveness, readiness with dependency checks, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Literal

import structlog
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from backend.core.resources import ResourcesDep
from backend.tasks import metrics as task_metrics

router = APIRouter(tags=["ops"])
log = structlog.get_logger(__name__)
STARTED = time.monotonic()
# Each dependency check is bounded, so /health itself answers within about a second and a
# half even when a dependency hangs rather than refuses.
CHECK_TIMEOUT_SECONDS = 1.5

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


async def _check(name: str, probe: Awaitable[object]) -> CheckResult:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_SECONDS)
        return "ok"
    except Exception as exc:  # any failure of a dependency is "down", never a 500
        log.warning("health_check_failed", check=name, error=f"{type(exc).__name__}: {exc}")
        return "down"


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "A dependency is down"}},
)
async def health(resources: ResourcesDep) -> JSONResponse:
    database, redis, storage = await asyncio.gather(
        _check("database", resources.db.ping()),
        _check("redis", resources.redis.ping()),
        _check("storage", resources.storage.check()),
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


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics", response_class=Response)
async def metrics(resources: ResourcesDep) -> Response:
    await task_metrics.refresh(resources)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
