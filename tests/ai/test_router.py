"""AI over HTTP: captions and edits through the worker, offline and with Gemini (a local fake
speaking its wire format, driven by the real SDK), the cache, quotas and bad requests."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image as PILImage
from pydantic import SecretStr

from backend.tasks.worker import running_worker
from tests.ai.fake_gemini import FakeGemini
from tests.auth.test_router import assert_problem
from tests.conftest import AppFactory, SignedIn
from tests.live import serve
from tests.realtime.test_ws import open_ws, receive_event, register


def solid(color: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


async def upload(
    c: httpx.AsyncClient, data: bytes, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    answer = await c.post(
        "/api/images", files={"file": ("img.png", data, "image/png")}, headers=headers or {}
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


@dataclass
class Live:
    base: str
    app: FastAPI
    client: httpx.AsyncClient
    user_id: uuid.UUID
    cookies: Any

    async def wait_task(self, task_id: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            task: dict[str, Any] = (await self.client.get(f"/api/tasks/{task_id}")).json()
            if task["status"] in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
                return task
            await asyncio.sleep(0.05)


async def start_live(app: FastAPI) -> AsyncIterator[Live]:
    async with running_worker(app.state.resources), serve(app) as base:
        user = await register(base, "ai")
        headers = {"Cookie": user.cookie_header, **user.csrf}
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as c:
            yield Live(base, app, c, user.id, user)


@pytest.fixture
async def offline(make_live_app: AppFactory) -> AsyncIterator[Live]:
    async for live in start_live(make_live_app(env="dev", ai_daily_quota=50)):
        yield live


async def test_local_caption_end_to_end_with_progress_on_ws(offline: Live) -> None:
    image = await upload(offline.client, solid((220, 30, 30)))
    async with open_ws(offline.base, offline.cookies) as ws:
        assert (await receive_event(ws))["type"] == "snapshot"
        answer = await offline.client.post("/api/ai/caption", json={"image_id": image["id"]})
        assert answer.status_code == 202, answer.text
        task_id = answer.json()["id"]
        assert answer.json()["kind"] == "caption"
        seen: list[tuple[str, int]] = []
        while not seen or seen[-1][0] not in ("succeeded", "failed"):
            event = await receive_event(ws)
            if event["type"] == "task.updated" and event["task"]["id"] == task_id:
                seen.append((event["task"]["status"], event["task"]["progress"]))
    assert seen[-1] == ("succeeded", 100), seen
    assert [p for _, p in seen] == sorted(p for _, p in seen)
    captioned = (await offline.client.get(f"/api/images/{image['id']}")).json()
    assert captioned["caption_model"] == "local"
    assert "red" in captioned["caption"].lower()


async def test_local_edit_makes_a_new_image(offline: Live) -> None:
    image = await upload(offline.client, solid((40, 90, 200)))
    answer = await offline.client.post(
        "/api/ai/edit", json={"image_id": image["id"], "prompt": "Make it a pencil sketch"}
    )
    assert answer.status_code == 202, answer.text
    task = await offline.wait_task(answer.json()["id"])
    assert task["status"] == "succeeded", task
    new_id = task["result"]["image_id"]
    edited = (await offline.client.get(f"/api/images/{new_id}")).json()
    assert edited["source"] == "edit"
    assert edited["parent_id"] == image["id"]
    assert edited["status"] in ("processing", "ready")

    polite = await offline.client.post(
        "/api/ai/edit",
        json={"image_id": image["id"], "prompt": "Please make it brighter, thanks!"},
    )
    assert polite.status_code == 202, polite.text
    assert (await offline.wait_task(polite.json()["id"]))["status"] == "succeeded"


async def test_auto_caption_after_upload(make_live_app: AppFactory) -> None:
    async for live in start_live(make_live_app(env="dev", auto_caption=True)):
        image = await upload(live.client, solid((30, 160, 40)))
        deadline = time.monotonic() + 30
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = (await live.client.get(f"/api/images/{image['id']}")).json()
            if body["caption"]:
                break
            await asyncio.sleep(0.1)
        assert body["caption_model"] == "local"
        assert "green" in body["caption"].lower()


@pytest.mark.parametrize(
    ("prompt", "code"),
    [
        ("", "ai.prompt_empty"),
        ("   \n\t ", "ai.prompt_empty"),
        ("x" * 2001, "ai.prompt_too_long"),
        # NUL is refused for every string field by the app-wide text check, before the prompt's.
        ("make it\x00 sepia", "request.validation"),
        ("make it\x07 sepia", "ai.prompt_invalid"),
        ("make it \u202esepia", "ai.prompt_invalid"),
    ],
)
async def test_prompt_rules(alice: SignedIn, prompt: str, code: str) -> None:
    image = await upload(alice.client, solid((1, 2, 3)), alice.csrf)
    answer = await alice.client.post(
        "/api/ai/edit", json={"image_id": image["id"], "prompt": prompt}, headers=alice.csrf
    )
    assert_problem(answer, 422, code)


async def test_ownership_provider_and_admin_rules(
    alice: SignedIn, bob: SignedIn, admin: SignedIn
) -> None:
    mine = await upload(alice.client, solid((9, 9, 9)), alice.csrf)
    theirs = await upload(bob.client, solid((8, 8, 8)), bob.csrf)
    foreign = await alice.client.post(
        "/api/ai/caption", json={"image_id": theirs["id"]}, headers=alice.csrf
    )
    assert_problem(foreign, 404, "image.not_found")
    reference = await alice.client.post(
        "/api/ai/edit",
        json={"image_id": mine["id"], "prompt": "sepia", "reference_image_id": theirs["id"]},
        headers=alice.csrf,
    )
    assert_problem(reference, 404, "image.not_found")
    for name, setting in (("gemini", "GEMINI_API_KEY"), ("openai", "OPENAI_API_KEY")):
        refused = await alice.client.post(
            "/api/ai/caption", json={"image_id": mine["id"], "provider": name}, headers=alice.csrf
        )
        body = assert_problem(refused, 422, "ai.provider_unavailable")
        # End users are told it is not there; how to switch it on is for operators.
        assert setting not in str(body)
        assert body["provider"] == name
        admin_image = await upload(admin.client, solid((7, 7, 7)), admin.csrf)
        told = await admin.client.post(
            "/api/ai/edit",
            json={"image_id": admin_image["id"], "prompt": "sepia", "provider": name},
            headers=admin.csrf,
        )
        assert setting in str(assert_problem(told, 422, "ai.provider_unavailable")["hint"])
    assert_problem(
        await alice.client.post(
            "/api/ai/caption",
            json={"image_id": mine["id"], "provider": "dall-e"},
            headers=alice.csrf,
        ),
        422,
        "request.validation",
    )
    assert_problem(await alice.client.get("/api/cache/status"), 403, "auth.admin_required")
    status = (await admin.client.get("/api/cache/status")).json()
    assert set(status) >= {"entries", "hits", "misses", "hit_rate", "ttl_seconds", "max_entries"}
    assert status["ttl_seconds"] == 3600


async def test_daily_quota(make_app: AppFactory, sign_up: Any) -> None:
    app = make_app(ai_daily_quota=2)
    user = await sign_up("quota", on=app)
    image = await upload(user.client, solid((5, 5, 5)), user.csrf)
    for _ in range(2):
        ok = await user.client.post(
            "/api/ai/caption", json={"image_id": image["id"]}, headers=user.csrf
        )
        assert ok.status_code == 202
    refused = await user.client.post(
        "/api/ai/caption", json={"image_id": image["id"]}, headers=user.csrf
    )
    assert_problem(refused, 429, "ai.quota_exceeded")
    assert 0 < int(refused.headers["Retry-After"]) <= 24 * 3600 + 1


@pytest.fixture
async def online(make_live_app: AppFactory, fake_gemini: FakeGemini) -> AsyncIterator[Live]:
    app = make_live_app(
        env="dev",
        gemini_api_key=SecretStr("test-gemini-key"),
        gemini_base_url=fake_gemini.base_url,
        gemini_max_retries=0,
        gemini_timeout_seconds=5,
    )
    async for live in start_live(app):
        yield live


async def test_gemini_caption_then_cache_hit(online: Live, fake_gemini: FakeGemini) -> None:
    image = await upload(online.client, solid((200, 20, 20), size=(3000, 2000)))
    fake_gemini.reply_text("A bright red rectangle.")
    first = await online.client.post("/api/ai/caption", json={"image_id": image["id"]})
    task = await online.wait_task(first.json()["id"])
    assert task["status"] == "succeeded", task
    assert task["result"]["cached"] is False
    captioned = (await online.client.get(f"/api/images/{image['id']}")).json()
    assert captioned["caption"] == "A bright red rectangle."
    assert captioned["caption_model"] == "gemini-2.5-flash"
    [sent] = fake_gemini.requests
    assert "gemini-2.5-flash" in sent.path
    [(_, inline)] = sent.inline_images()
    assert max(PILImage.open(io.BytesIO(inline)).size) <= 1536  # downscaled before sending

    second = await online.client.post("/api/ai/caption", json={"image_id": image["id"]})
    again = await online.wait_task(second.json()["id"])
    assert again["status"] == "succeeded"
    assert again["result"]["cached"] is True
    assert len(fake_gemini.requests) == 1  # answered from the cache, no provider call


async def test_gemini_edit_creates_an_image(online: Live, fake_gemini: FakeGemini) -> None:
    image = await upload(online.client, solid((10, 200, 10)))
    reference = await upload(online.client, solid((10, 10, 200)))
    fake_gemini.reply_image()
    answer = await online.client.post(
        "/api/ai/edit",
        json={
            "image_id": image["id"],
            "prompt": "put the child from the reference into this book page",
            "reference_image_id": reference["id"],
        },
    )
    task = await online.wait_task(answer.json()["id"])
    assert task["status"] == "succeeded", task
    [sent] = fake_gemini.requests
    assert "put the child from the reference" in " ".join(sent.texts())
    assert len(sent.inline_images()) == 2
    edited = (await online.client.get(f"/api/images/{task['result']['image_id']}")).json()
    assert (edited["source"], edited["parent_id"]) == ("edit", image["id"])


async def test_gemini_failures_become_task_errors(online: Live, fake_gemini: FakeGemini) -> None:
    image = await upload(online.client, solid((90, 90, 90)))
    fake_gemini.reply_blocked()
    blocked = await online.client.post("/api/ai/caption", json={"image_id": image["id"]})
    task = await online.wait_task(blocked.json()["id"])
    assert (task["status"], task["error_code"], task["attempts"]) == ("failed", "ai.blocked", 1)

    fake_gemini.reply_error(400, message="bad request")
    refused = await online.client.post(
        "/api/ai/edit",
        json={"image_id": image["id"], "prompt": "make it sepia", "provider": "gemini"},
    )
    task = await online.wait_task(refused.json()["id"])
    assert (task["status"], task["error_code"], task["attempts"]) == (
        "failed",
        "ai.provider_error",
        1,
    )
