"""``ATELIER_BATCH_CONCURRENCY`` bounds the fetches one batch has in flight at the origin (the
load a batch puts on a shop's server), while the local work on fetched images overlaps them."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend.tasks.worker import running_worker
from tests.batches.test_router import jpeg, product_csv, wait_done
from tests.conftest import AppFactory
from tests.live import serve
from tests.realtime.test_ws import register

IMAGES = 12


class CountingOrigin:
    """Serves images slowly enough for fetches to overlap, and records the most in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0

    def app(self) -> Starlette:
        async def image(request: Request) -> Response:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                await asyncio.sleep(0.05)
                return Response(jpeg(int(request.path_params["n"])), media_type="image/jpeg")
            finally:
                self.in_flight -= 1

        return Starlette(routes=[Route("/img/{n:int}.jpg", image)])


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_concurrency_bounds_the_fetches(make_live_app: AppFactory, concurrency: int) -> None:
    origin = CountingOrigin()
    async with serve(origin.app()) as origin_base:  # type: ignore[arg-type]
        app = make_live_app(
            env="dev", fetch_allow_loopback_hosts=["127.0.0.1"], batch_concurrency=concurrency
        )
        async with running_worker(app.state.resources), serve(app) as base:
            user = await register(base, f"shop{concurrency}")
            headers = {"Cookie": user.cookie_header, **user.csrf}
            rows = [(str(n + 1), f"P{n}", [f"{origin_base}/img/{n}.jpg"]) for n in range(IMAGES)]
            async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as c:
                created = await c.post(
                    "/api/batches", files={"file": ("p.csv", product_csv(rows), "text/csv")}
                )
                assert created.status_code == 202, created.text
                batch = await wait_done(c, created.json()["batch"]["id"])
    assert batch["status"] == "succeeded", batch
    assert batch["processed_images"] == IMAGES
    # Never more than the setting; and with room for more, the batch does use it.
    assert origin.peak == concurrency
