"""Batches end to end: a CSV of URLs served by a local origin, fetched through the SSRF guard
(loopback allowed for the origin only), images and compressed outputs, the output CSV, live
progress on /ws and a signed webhook."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image as PILImage
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backend.batches.models import WebhookDelivery
from backend.batches.webhooks import SIGNATURE_HEADER, verify
from backend.tasks.worker import running_worker
from tests.auth.test_router import assert_problem
from tests.conftest import AppFactory, SignedIn
from tests.live import serve
from tests.realtime.test_ws import LiveUser, open_ws, receive_event, register


def jpeg(seed: int, size: tuple[int, int] = (400, 300)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", size, (seed * 40 % 255, 120, 200 - seed * 30 % 200)).save(
        out, "JPEG", quality=95
    )
    return out.getvalue()


@dataclass
class Origin:
    """Product images and a webhook receiver, on loopback."""

    base: str = ""
    hooks: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    hook_statuses: list[int] = field(default_factory=list)

    def app(self) -> Starlette:
        async def image(request: Request) -> Response:
            return Response(jpeg(int(request.path_params["n"])), media_type="image/jpeg")

        async def html(_: Request) -> Response:
            return Response(b"<html>not an image</html>", media_type="text/html")

        async def hook(request: Request) -> Response:
            self.hooks.append((dict(request.headers), await request.body()))
            code = self.hook_statuses.pop(0) if self.hook_statuses else 200
            return JSONResponse({"ok": code == 200}, status_code=code)

        return Starlette(
            routes=[
                Route("/img/{n:int}.jpg", image),
                Route("/page.html", html),
                Route("/hook", hook, methods=["POST"]),
            ]
        )


@dataclass
class Live:
    base: str
    app: FastAPI
    client: httpx.AsyncClient
    origin: Origin
    user: LiveUser


@pytest.fixture
async def live(make_live_app: AppFactory) -> AsyncIterator[Live]:
    origin = Origin()
    async with serve(origin.app()) as origin_base:  # type: ignore[arg-type]
        origin.base = origin_base
        app = make_live_app(
            env="dev",
            fetch_allow_loopback_hosts=["127.0.0.1"],
            webhook_base_delay_seconds=0.01,
            batch_concurrency=2,
        )
        async with running_worker(app.state.resources), serve(app) as base:
            user = await register(base, "shop")
            headers = {"Cookie": user.cookie_header, **user.csrf}
            async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as c:
                yield Live(base, app, c, origin, user)


def product_csv(rows: list[tuple[str, str, list[str]]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["S. No.", "Product Name", "Input Image Urls"])
    for serial, name, urls in rows:
        writer.writerow([serial, name, ", ".join(urls)])
    return ("\ufeff" + out.getvalue()).encode()


async def wait_done(c: httpx.AsyncClient, batch_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = (await c.get(f"/api/batches/{batch_id}")).json()
        if batch["status"] in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
            return batch
        await asyncio.sleep(0.1)


async def test_batch_end_to_end(live: Live) -> None:
    c, o = live.client, live.origin
    user = live.user
    secret = (await c.get("/api/auth/webhook-secret")).json()["secret"]
    data = product_csv(
        [
            ("1", "Blue mug", [o.base + "/img/1.jpg", o.base + "/img/2.jpg"]),
            (
                "2",
                "Red, big chair",
                [o.base + "/img/3.jpg", o.base + "/page.html", o.base + "/missing.jpg"],
            ),
        ]
    )
    async with open_ws(live.base, user) as ws:
        assert (await receive_event(ws))["type"] == "snapshot"
        created = await c.post(
            "/api/batches",
            files={"file": ("products.csv", data, "text/csv")},
            data={"webhook_url": o.base + "/hook", "quality": "40"},
        )
        assert created.status_code == 202, created.text
        batch_id = created.json()["batch"]["id"]
        task_id = created.json()["task"]["id"]
        progress: list[int] = []
        while not progress or progress[-1] < 100:
            event = await receive_event(ws)
            if event["type"] == "task.updated" and event["task"]["id"] == task_id:
                assert event["task"]["status"] != "failed", event
                progress.append(event["task"]["progress"])
    assert progress == sorted(progress)
    assert len(set(progress)) >= 4

    batch = await wait_done(c, batch_id)
    assert batch["status"] == "succeeded"
    assert (batch["total_images"], batch["processed_images"], batch["failed_images"]) == (5, 5, 2)
    items = (await c.get(f"/api/batches/{batch_id}/items")).json()["items"]
    by_url = {item["url"].rsplit("/", 1)[-1]: item for item in items}
    assert by_url["page.html"]["error_code"] == "fetch.bad_content_type"
    assert by_url["missing.jpg"]["error_code"] == "fetch.http_status"
    assert all(by_url[f"{n}.jpg"]["status"] == "succeeded" for n in (1, 2, 3))

    output = (await c.get(f"/api/batches/{batch_id}/output.csv")).content.decode()
    rows = list(csv.reader(io.StringIO(output)))
    assert rows[0] == ["S. No.", "Product Name", "Input Image Urls", "Output Image Urls"]
    assert rows[2][1] == "Red, big chair"
    first_outputs = rows[1][3].split(",")
    assert len(first_outputs) == 2
    assert len(rows[2][3].split(",")) == 1  # the two failures are left out
    # Output URLs are absolute under PUBLIC_BASE_URL; this server's port is another.
    compressed = await c.get(urlsplit(first_outputs[0].strip()).path)
    assert compressed.status_code == 200
    out = PILImage.open(io.BytesIO(compressed.content))
    assert out.format == "JPEG"
    assert out.size == (400, 300)
    assert len(compressed.content) < len(jpeg(1))  # quality 40 against the quality-95 input
    # They are signed delivery URLs: they open without cookies.
    async with httpx.AsyncClient(base_url=live.base) as anonymous:
        again = await anonymous.get(urlsplit(first_outputs[0].strip()).path)
    assert again.status_code == 200
    assert again.content == compressed.content

    images = (await c.get("/api/images")).json()["items"]
    assert sorted(i["source"] for i in images) == ["batch"] * 3

    for _ in range(100):
        if o.hooks:
            break
        await asyncio.sleep(0.05)
    [(headers, body)] = o.hooks
    assert verify(secret, headers[SIGNATURE_HEADER.lower()], body, now=int(time.time()))
    payload = json.loads(body)
    assert payload["batch_id"] == batch_id
    assert (payload["processed_images"], payload["failed_images"], payload["total_images"]) == (
        5,
        2,
        5,
    )
    outputs = [i["output_url"] for i in payload["items"] if i["status"] == "succeeded"]
    assert first_outputs[0].strip() in outputs
    assert len(outputs) == 3


async def test_webhook_is_retried_and_attempts_recorded(live: Live) -> None:
    c, o = live.client, live.origin
    o.hook_statuses.extend([500, 503])
    created = await c.post(
        "/api/batches",
        files={
            "file": ("p.csv", product_csv([("1", "Lamp", [o.base + "/img/4.jpg"])]), "text/csv")
        },
        data={"webhook_url": o.base + "/hook"},
    )
    batch_id = created.json()["batch"]["id"]
    assert (await wait_done(c, batch_id))["status"] == "succeeded"
    assert len(o.hooks) == 3
    async with live.app.state.resources.db.sessionmaker() as session:
        attempts = list(
            await session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.batch_id == uuid.UUID(batch_id))
                .order_by(WebhookDelivery.attempt)
            )
        )
    assert [(a.status_code, a.delivered) for a in attempts] == [
        (500, False),
        (503, False),
        (200, True),
    ]


async def test_the_webhook_and_the_batch_agree_on_finished_at(live: Live) -> None:
    c, o = live.client, live.origin
    # A failed first delivery: the retry comes later, yet carries the same instant.
    o.hook_statuses.append(500)
    created = await c.post(
        "/api/batches",
        files={"file": ("p.csv", product_csv([("1", "Cup", [o.base + "/img/5.jpg"])]), "text/csv")},
        data={"webhook_url": o.base + "/hook"},
    )
    batch = await wait_done(c, created.json()["batch"]["id"])
    assert len(o.hooks) == 2
    sent = [json.loads(body)["finished_at"] for _, body in o.hooks]
    assert sent[0] == sent[1] == batch["finished_at"]
    listed = (await c.get("/api/batches")).json()["items"]
    assert [b["finished_at"] for b in listed if b["id"] == batch["id"]] == [batch["finished_at"]]


async def test_malformed_csv_lists_every_bad_row(alice: SignedIn) -> None:
    data = (
        b"S. No.,Product Name,Input Image Urls\r\n"
        b"1,Good,https://example.com/a.jpg\r\n"
        b"2,,https://example.com/b.jpg\r\n"
        b"3,No urls,\r\n"
        b"4,Bad scheme,ftp://example.com/c.jpg\r\n"
    )
    answer = await alice.client.post(
        "/api/batches", files={"file": ("p.csv", data, "text/csv")}, headers=alice.csrf
    )
    body = assert_problem(answer, 422, "batch.csv_rows")
    errors = body["errors"]
    assert isinstance(errors, list)
    assert [e["line"] for e in errors] == [3, 4, 5]
    missing = await alice.client.post(
        "/api/batches",
        files={"file": ("p.csv", b"S. No.,Name\r\n1,x\r\n", "text/csv")},
        headers=alice.csrf,
    )
    assert_problem(missing, 422, "batch.csv_header")
    private_hook = await alice.client.post(
        "/api/batches",
        files={
            "file": ("p.csv", product_csv([("1", "x", ["https://example.com/a.jpg"])]), "text/csv")
        },
        data={"webhook_url": "http://169.254.169.254/latest/meta-data"},
        headers=alice.csrf,
    )
    assert_problem(private_hook, 422, "batch.invalid_webhook")
    bad_quality = await alice.client.post(
        "/api/batches",
        files={
            "file": ("p.csv", product_csv([("1", "x", ["https://example.com/a.jpg"])]), "text/csv")
        },
        data={"quality": "120"},
        headers=alice.csrf,
    )
    assert_problem(bad_quality, 422, "request.validation")


async def test_other_users_batches_are_404(alice: SignedIn, bob: SignedIn) -> None:
    created = await alice.client.post(
        "/api/batches",
        files={
            "file": ("p.csv", product_csv([("1", "x", ["https://example.com/a.jpg"])]), "text/csv")
        },
        headers=alice.csrf,
    )
    assert created.status_code == 202, created.text
    batch_id = created.json()["batch"]["id"]
    for path in (
        f"/api/batches/{batch_id}",
        f"/api/batches/{batch_id}/items",
        f"/api/batches/{batch_id}/output.csv",
    ):
        assert_problem(await bob.client.get(path), 404, "batch.not_found")
    assert (await bob.client.get("/api/batches")).json()["items"] == []
