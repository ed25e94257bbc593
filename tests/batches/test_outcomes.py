"""What a finished batch says about each input URL (seed 004, API v2): ``partial`` and
``failed`` statuses, successes-only counts, one output slot per input URL with an ``Errors``
column, the webhook's real status, and auto-captions for imported images.

Real stack: Postgres, Redis, SeaweedFS, a worker, the app on a loopback port, and the local
origin of ``tests/batches/origin.py`` serving the images and receiving the webhooks.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from backend.batches.webhooks import SIGNATURE_HEADER, verify
from backend.tasks.worker import running_worker
from tests.batches.origin import Origin
from tests.batches.test_router import product_csv
from tests.conftest import AppFactory
from tests.live import serve
from tests.realtime.test_ws import register

FINAL = ("succeeded", "partial", "failed", "canceled")


@dataclass
class Shop:
    app: FastAPI
    client: httpx.AsyncClient
    origin: Origin

    async def run(self, rows: list[tuple[str, str, list[str]]]) -> dict[str, Any]:
        """Submit a batch with the origin's sink as webhook; the batch once it has ended."""
        created = await self.client.post(
            "/api/batches",
            files={"file": ("shop.csv", product_csv(rows), "text/csv")},
            data={"webhook_url": self.origin.url("/hook")},
        )
        assert created.status_code == 202, created.text
        batch_id = created.json()["batch"]["id"]
        deadline = time.monotonic() + 60
        while True:
            batch: dict[str, Any] = (await self.client.get(f"/api/batches/{batch_id}")).json()
            if batch["status"] in FINAL:
                return batch
            assert time.monotonic() < deadline, batch
            await asyncio.sleep(0.1)

    async def output(self, batch_id: str) -> list[list[str]]:
        answer = await self.client.get(f"/api/batches/{batch_id}/output.csv")
        assert answer.status_code == 200, answer.text
        return list(csv.reader(io.StringIO(answer.content.decode("utf-8"))))


ShopFactory = Callable[..., AbstractAsyncContextManager[Shop]]


@pytest.fixture
def open_shop(make_live_app: AppFactory) -> ShopFactory:
    @asynccontextmanager
    async def opened(**settings: Any) -> AsyncIterator[Shop]:
        with Origin() as origin:
            app = make_live_app(
                env="dev",
                fetch_allow_loopback_hosts=["127.0.0.1"],
                webhook_base_delay_seconds=0.01,
                batch_concurrency=2,
                **settings,
            )
            async with running_worker(app.state.resources), serve(app) as base:
                user = await register(base, "shop")
                headers = {"Cookie": user.cookie_header, **user.csrf}
                async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as c:
                    yield Shop(app, c, origin)

    return opened


async def signed_payload(shop: Shop) -> dict[str, Any]:
    secret = (await shop.client.get("/api/auth/webhook-secret")).json()["secret"]
    [seen] = shop.origin.received
    signature = {k.lower(): v for k, v in seen.headers.items()}[SIGNATURE_HEADER.lower()]
    assert verify(secret, signature, seen.body, now=int(time.time()))
    payload: dict[str, Any] = json.loads(seen.body)
    return payload


async def test_a_partly_failed_batch_is_partial_with_a_slot_per_input_url(
    open_shop: ShopFactory,
) -> None:
    async with open_shop() as shop:
        o = shop.origin
        jpg, png, gif = o.url("/image.jpg"), o.url("/image.png"), o.url("/image.gif")
        gone, html = o.url("/status/404"), o.url("/wrong/html-type")
        batch = await shop.run(
            [
                ("1", "Mug", [gone, jpg, html, png]),  # failures first, between and around
                ("2", "Chair", [gif]),
                ("3", "Lamp", [gone]),  # a row with no output at all
            ]
        )

        assert batch["status"] == "partial"
        # Successes only; failures are counted apart, and together they are every URL.
        assert (batch["total_images"], batch["processed_images"], batch["failed_images"]) == (
            6,
            3,
            3,
        )
        assert batch["progress"] == 100
        listed = (await shop.client.get("/api/batches")).json()["items"]
        assert [b["status"] for b in listed] == ["partial"]

        items = (await shop.client.get(f"/api/batches/{batch['id']}/items")).json()["items"]
        by_url = {item["url"]: item for item in items}
        assert by_url[gone]["error_code"] == "fetch.http_status"
        assert by_url[html]["error_code"] == "fetch.bad_content_type"

        rows = await shop.output(batch["id"])
        assert rows[0] == [
            "S. No.",
            "Product Name",
            "Input Image Urls",
            "Output Image Urls",
            "Errors",
        ]
        mug, chair, lamp = rows[1:]
        slots = mug[3].split(",")
        # One slot per input URL, in the input's order, empty where that URL failed.
        assert len(slots) == len(mug[2].split(",")) == 4
        assert slots[0] == slots[2] == ""
        assert slots[1] == by_url[jpg]["output_url"]
        assert slots[3] == by_url[png]["output_url"]
        assert slots[1] != slots[3]
        assert mug[4] == f"{gone}: fetch.http_status; {html}: fetch.bad_content_type"
        assert chair[3:] == [by_url[gif]["output_url"], ""]
        assert lamp[3:] == ["", f"{gone}: fetch.http_status"]
        # The outputs open without cookies (a delivery URL; this server's port is another
        # than PUBLIC_BASE_URL's, so only the path is kept).
        async with httpx.AsyncClient(base_url=str(shop.client.base_url), timeout=30) as anyone:
            for url in (slots[1], slots[3], chair[3]):
                opened = await anyone.get(urlsplit(url).path)
                assert opened.status_code == 200, opened.text
                assert opened.headers["content-type"] == "image/jpeg"

        payload = await signed_payload(shop)
        assert payload["status"] == "partial"
        assert (payload["processed_images"], payload["failed_images"]) == (3, 3)
        task = (await shop.client.get(f"/api/tasks/{batch['task_id']}")).json()
        assert task["result"]["status"] == "partial"


async def test_a_batch_where_every_url_failed_is_failed(open_shop: ShopFactory) -> None:
    async with open_shop() as shop:
        o = shop.origin
        gone, broken = o.url("/status/410"), o.url("/wrong/html-body")
        batch = await shop.run([("1", "Mug", [gone, broken])])

        # Not a green "succeeded": nothing was produced.
        assert batch["status"] == "failed"
        assert (batch["processed_images"], batch["failed_images"]) == (0, 2)
        assert batch["finished_at"] is not None

        items = (await shop.client.get(f"/api/batches/{batch['id']}/items")).json()["items"]
        codes = {item["url"]: item["error_code"] for item in items}
        assert codes[gone] == "fetch.http_status"
        assert codes[broken] is not None
        assert all(item["output_url"] is None for item in items)

        [_, row] = await shop.output(batch["id"])
        assert row[3] == ","  # two empty slots
        assert row[4] == f"{gone}: fetch.http_status; {broken}: {codes[broken]}"

        payload = await signed_payload(shop)
        assert payload["status"] == "failed"
        assert (payload["processed_images"], payload["failed_images"]) == (0, 2)


async def test_a_fully_successful_batch_stays_succeeded(open_shop: ShopFactory) -> None:
    async with open_shop() as shop:
        o = shop.origin
        batch = await shop.run([("1", "Mug", [o.url("/image.jpg"), o.url("/image.png")])])

        assert batch["status"] == "succeeded"
        assert (batch["processed_images"], batch["failed_images"]) == (2, 0)
        [_, row] = await shop.output(batch["id"])
        assert all(row[3].split(","))
        assert len(row[3].split(",")) == 2
        assert row[4] == ""
        assert (await signed_payload(shop))["status"] == "succeeded"


async def test_imported_images_are_auto_captioned_when_enabled(open_shop: ShopFactory) -> None:
    async with open_shop(auto_caption=True) as shop:
        batch = await shop.run([("1", "Mug", [shop.origin.url("/image.png")])])
        assert batch["status"] == "succeeded"
        [item] = (await shop.client.get(f"/api/batches/{batch['id']}/items")).json()["items"]
        deadline = time.monotonic() + 30
        image: dict[str, Any] = {}
        while time.monotonic() < deadline:
            image = (await shop.client.get(f"/api/images/{item['image_id']}")).json()
            if image["caption"]:
                break
            await asyncio.sleep(0.1)
        assert image["source"] == "batch"
        assert image["caption_model"] == "local"
        assert image["caption"]


async def test_imported_images_are_not_captioned_when_disabled(open_shop: ShopFactory) -> None:
    async with open_shop() as shop:
        batch = await shop.run([("1", "Mug", [shop.origin.url("/image.png")])])
        tasks = (await shop.client.get("/api/tasks?limit=100")).json()["items"]
        assert sorted(t["kind"] for t in tasks) == ["batch", "thumbnails"]
        assert batch["status"] == "succeeded"
