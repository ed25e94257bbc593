"""The sketch API: styles, creation as a task, the worker end to end with progress on /ws."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image as PILImage

from backend.tasks.worker import running_worker
from tests.auth.test_router import assert_problem
from tests.conftest import AppFactory, SignedIn
from tests.live import serve
from tests.realtime.test_ws import open_ws, receive_event, register

PHOTO_SIZE = (640, 480)


def photo() -> bytes:
    """A small picture with structure (gradients and shapes), so styles have edges to draw."""
    image = PILImage.linear_gradient("L").resize(PHOTO_SIZE).convert("RGB")
    for i in range(0, 640, 80):
        image.paste((30 + i // 4, 120, 200 - i // 4), (i, 100, i + 40, 380))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


async def upload(c: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    answer = await c.post(
        "/api/images", files={"file": ("photo.jpg", photo(), "image/jpeg")}, headers=headers
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_styles_are_listed_with_previews(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/sketch/styles/available")).json()
    assert [s["id"] for s in body["styles"]] == [
        "pencil",
        "charcoal",
        "watercolor",
        "ink",
        "pastel",
        "oil",
        "acrylic",
    ]
    assert [m["id"] for m in body["methods"]] == ["basic", "advanced", "artistic"]
    assert all(s["name"] and s["description"] for s in body["styles"])
    preview = await client.get(body["styles"][0]["preview_url"])
    assert preview.status_code == 200
    assert preview.headers["content-type"] == "image/png"
    assert PILImage.open(io.BytesIO(preview.content)).format == "PNG"
    assert_problem(
        await client.get("/api/sketch/styles/crayon/preview"), 404, "sketch.unknown_style"
    )


@pytest.mark.parametrize(
    "body",
    [
        {"style": "crayon", "method": "basic"},
        {"style": "pencil", "method": "fancy"},
        {"style": "pencil", "params": {"intensity": 1.5}},
        {"style": "pencil", "params": {"max_side": 10}},
        {"style": "pencil", "params": {"format": "bmp"}},
        {"style": "pencil", "params": {"unknown": 1}},
        {"style": 7},
    ],
)
async def test_invalid_requests_are_422(alice: SignedIn, body: dict[str, Any]) -> None:
    answer = await alice.client.post(
        "/api/sketch/create", json={"image_id": str(uuid.uuid4()), **body}, headers=alice.csrf
    )
    assert_problem(answer, 422, "request.validation")


async def test_other_users_image_or_sketch_is_404(alice: SignedIn, bob: SignedIn) -> None:
    image = await upload(alice.client, alice.csrf)
    answer = await bob.client.post(
        "/api/sketch/create", json={"image_id": image["id"], "style": "ink"}, headers=bob.csrf
    )
    assert_problem(answer, 404, "image.not_found")
    created = await alice.client.post(
        "/api/sketch/create", json={"image_id": image["id"], "style": "ink"}, headers=alice.csrf
    )
    assert created.status_code == 202, created.text
    sketch = created.json()["sketch"]
    for method, path in (
        ("GET", f"/api/sketch/{sketch['id']}"),
        ("GET", f"/api/sketch/{sketch['id']}/result"),
        ("DELETE", f"/api/sketch/{sketch['id']}"),
    ):
        assert_problem(
            await bob.client.request(method, path, headers=bob.csrf), 404, "sketch.not_found"
        )
    assert_problem(
        await bob.client.get(f"/api/sketch/task/{created.json()['task']['id']}"),
        404,
        "task.not_found",
    )
    assert (await bob.client.get("/api/sketch/")).json()["items"] == []


async def test_create_is_idempotent_and_failed_images_refused(alice: SignedIn) -> None:
    image = await upload(alice.client, alice.csrf)
    headers = {**alice.csrf, "Idempotency-Key": "sketch-1"}
    body = {
        "image_id": image["id"],
        "style": "oil",
        "method": "artistic",
        "params": {"format": "webp"},
    }
    first = await alice.client.post("/api/sketch/create", json=body, headers=headers)
    second = await alice.client.post("/api/sketch/create", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    created = first.json()
    assert created["sketch"]["status"] == "processing"
    assert created["sketch"]["params"] == {"intensity": 0.5, "max_side": 2048, "format": "webp"}
    assert created["task"]["kind"] == "sketch"
    assert created["task"]["sketch_id"] == created["sketch"]["id"]
    assert len((await alice.client.get("/api/sketch/")).json()["items"]) == 1
    # Without a format, the stored params say the style's default: JPEG for colour, PNG for gray.
    for style, fmt in (("watercolor", "jpeg"), ("ink", "png")):
        made = await alice.client.post(
            "/api/sketch/create",
            json={"image_id": image["id"], "style": style},
            headers=alice.csrf,
        )
        assert made.status_code == 202, made.text
        assert made.json()["sketch"]["params"]["format"] == fmt

    bad = await alice.client.post(
        "/api/images",
        files={"file": ("x.jpg", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/jpeg")},
        headers=alice.csrf,
    )
    failed_id = bad.json()["image_id"]
    refused = await alice.client.post(
        "/api/sketch/create", json={"image_id": failed_id, "style": "ink"}, headers=alice.csrf
    )
    assert_problem(refused, 409, "sketch.image_failed")


@pytest.fixture
async def live(make_live_app: AppFactory) -> AsyncIterator[tuple[str, FastAPI]]:
    app = make_live_app(env="dev")
    async with running_worker(app.state.resources), serve(app) as base:
        yield base, app


async def test_sketch_end_to_end_with_progress_on_ws(live: tuple[str, FastAPI]) -> None:
    base, _ = live
    user = await register(base, "sketcher")
    headers = {"Cookie": user.cookie_header, **user.csrf}
    async with httpx.AsyncClient(base_url=base, timeout=20, headers=headers) as c:
        image = await upload(c, headers)
        async with open_ws(base, user) as ws:
            assert (await receive_event(ws))["type"] == "snapshot"
            created = await c.post(
                "/api/sketch/create",
                json={"image_id": image["id"], "style": "pencil", "method": "advanced"},
            )
            assert created.status_code == 202, created.text
            task_id = created.json()["task"]["id"]
            progress: list[int] = []
            statuses: list[str] = []
            while "succeeded" not in statuses:
                event = await receive_event(ws)
                if event["type"] == "task.updated" and event["task"]["id"] == task_id:
                    progress.append(event["task"]["progress"])
                    statuses.append(event["task"]["status"])
                assert "failed" not in statuses, event
        assert progress == sorted(progress)
        assert len(set(progress)) >= 4
        assert statuses[0] == "queued"
        assert "running" in statuses

        sketch = (await c.get(f"/api/sketch/{created.json()['sketch']['id']}")).json()
        assert sketch["status"] == "ready"
        assert (sketch["width"], sketch["height"]) == PHOTO_SIZE
        assert sketch["processing_time_ms"] >= 0
        task = (await c.get(f"/api/sketch/task/{task_id}")).json()
        assert task["status"] == "succeeded"
        assert task["progress"] == 100

        result = await c.get(sketch["result_url"])
        assert result.status_code == 200
        drawn = PILImage.open(io.BytesIO(result.content))
        assert drawn.format == "PNG"
        assert drawn.mode == "L"  # pencil is a grayscale style, stored as such
        assert drawn.size == PHOTO_SIZE

        # The finished sketch carries signed delivery links that open without cookies.
        assert set(sketch["delivery"]) == {"small", "card", "medium", "large"}
        # (The app's public base URL is not this test server's; the signature covers the path.)
        path = httpx.URL(sketch["delivery"]["small"]).path
        async with httpx.AsyncClient(base_url=base, timeout=20) as anonymous:
            small = await anonymous.get(path, headers={"Accept": "image/webp"})
        assert small.status_code == 200, small.text
        assert small.headers["content-type"] == "image/webp"
        assert max(PILImage.open(io.BytesIO(small.content)).size) == 200
        listed = (await c.get("/api/sketch/", params={"image_id": image["id"]})).json()
        assert listed["items"][0]["delivery"] == sketch["delivery"]

        deleted = await c.delete(f"/api/sketch/{sketch['id']}")
        assert deleted.status_code == 204
        assert_problem(await c.get(f"/api/sketch/{sketch['id']}"), 404, "sketch.not_found")
        assert_problem(await c.get(sketch["result_url"]), 404, "sketch.not_found")


async def test_deleting_the_image_takes_its_sketches(live: tuple[str, FastAPI]) -> None:
    base, app = live
    user = await register(base, "owner")
    headers = {"Cookie": user.cookie_header, **user.csrf}
    async with httpx.AsyncClient(base_url=base, timeout=20, headers=headers) as c:
        image = await upload(c, headers)
        created = (
            await c.post("/api/sketch/create", json={"image_id": image["id"], "style": "acrylic"})
        ).json()
        sketch_id = created["sketch"]["id"]
        for _ in range(200):
            sketch = (await c.get(f"/api/sketch/{sketch_id}")).json()
            if sketch["status"] != "processing":
                break
            await asyncio.sleep(0.05)
        assert sketch["status"] == "ready", sketch
        storage = app.state.resources.storage
        from backend.sketches.models import Sketch

        async with app.state.resources.db.sessionmaker() as session:
            row = await session.get(Sketch, uuid.UUID(sketch_id))
            assert row is not None
            key = row.result_key
        assert key is not None
        assert await storage.head(key) is not None
        assert (await c.delete(f"/api/images/{image['id']}")).status_code == 204
        assert_problem(await c.get(f"/api/sketch/{sketch_id}"), 404, "sketch.not_found")
        assert await storage.head(key) is None


def big_png(side: int) -> bytes:
    """A ``side``² PNG of a few flat bands: tiny to store, ``side``² pixels to decode."""
    image = PILImage.new("L", (side, side), 90)
    image.paste(200, (0, side // 3, side, 2 * side // 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def test_an_image_accepted_over_50_mp_can_be_sketched(make_live_app: AppFactory) -> None:
    """With ``ATELIER_MAX_IMAGE_PIXELS`` raised, an upload past the decoder's default 50 MP is
    accepted; the sketch of it must decode under the same limit, not fail as undecodable."""
    side = 7200  # 51.8 MP
    app = make_live_app(env="dev", max_image_pixels=60_000_000)
    async with running_worker(app.state.resources), serve(app) as base:
        user = await register(base, "big")
        headers = {"Cookie": user.cookie_header, **user.csrf}
        async with httpx.AsyncClient(base_url=base, timeout=60, headers=headers) as c:
            answer = await c.post(
                "/api/images", files={"file": ("big.png", big_png(side), "image/png")}
            )
            assert answer.status_code == 201, answer.text
            assert (answer.json()["width"], answer.json()["height"]) == (side, side)
            created = await c.post(
                "/api/sketch/create",
                json={
                    "image_id": answer.json()["id"],
                    "style": "pencil",
                    "params": {"max_side": 512},
                },
            )
            assert created.status_code == 202, created.text
            task_id = created.json()["task"]["id"]
            async with asyncio.timeout(60):
                while True:
                    task = (await c.get(f"/api/sketch/task/{task_id}")).json()
                    if task["status"] in ("succeeded", "failed"):
                        break
                    await asyncio.sleep(0.2)
            assert task["status"] == "succeeded", task
            sketch = (await c.get(f"/api/sketch/{created.json()['sketch']['id']}")).json()
            assert (sketch["width"], sketch["height"]) == (512, 512)
