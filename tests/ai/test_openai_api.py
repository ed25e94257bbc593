"""OpenAI over HTTP on the real stack: the API queues the task, a worker runs it through the
real openai SDK against the local fake, and the results land on the images."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import pytest
from PIL import Image as PILImage
from pydantic import SecretStr

from tests.ai.fake_gemini import solid_png
from tests.ai.fake_openai import CHAT_PATH, EDIT_PATH, FakeOpenAI, data_url_bytes
from tests.ai.test_router import Live, solid, start_live, upload
from tests.conftest import AppFactory


@pytest.fixture
async def with_openai(make_live_app: AppFactory, fake_openai: FakeOpenAI) -> AsyncIterator[Live]:
    app = make_live_app(
        env="dev",
        openai_api_key=SecretStr("sk-test-openai"),
        openai_base_url=fake_openai.base_url,
        openai_max_retries=0,
        openai_timeout_seconds=5,
    )
    async for live in start_live(app):
        yield live


async def test_openai_caption_then_cache_hit(with_openai: Live, fake_openai: FakeOpenAI) -> None:
    image = await upload(with_openai.client, solid((200, 20, 20), size=(3000, 2000)))
    fake_openai.reply_text("A red rectangle.")
    first = await with_openai.client.post(
        "/api/ai/caption", json={"image_id": image["id"], "provider": "openai"}
    )
    assert first.status_code == 202, first.text
    task = await with_openai.wait_task(first.json()["id"])
    assert task["status"] == "succeeded", task
    captioned = (await with_openai.client.get(f"/api/images/{image['id']}")).json()
    assert (captioned["caption"], captioned["caption_model"]) == ("A red rectangle.", "gpt-4o-mini")
    [sent] = fake_openai.requests
    assert sent.path == CHAT_PATH
    _, inline = data_url_bytes(sent.image_urls()[0])
    assert max(PILImage.open(io.BytesIO(inline)).size) <= 1536

    # openai is the default when it is the only remote provider configured.
    again = await with_openai.client.post("/api/ai/caption", json={"image_id": image["id"]})
    cached = await with_openai.wait_task(again.json()["id"])
    assert (cached["status"], cached["result"]["cached"]) == ("succeeded", True)
    assert len(fake_openai.requests) == 1


async def test_openai_edit_with_a_reference_makes_a_new_image(
    with_openai: Live, fake_openai: FakeOpenAI
) -> None:
    image = await upload(with_openai.client, solid((10, 200, 10)))
    reference = await upload(with_openai.client, solid((10, 10, 200), size=(200, 100)))
    fake_openai.reply_image(solid_png(48, 32, (0, 0, 255)))
    answer = await with_openai.client.post(
        "/api/ai/edit",
        json={
            "image_id": image["id"],
            "prompt": "add a party hat like the one in the reference",
            "reference_image_id": reference["id"],
            "provider": "openai",
        },
    )
    assert answer.status_code == 202, answer.text
    task = await with_openai.wait_task(answer.json()["id"])
    assert task["status"] == "succeeded", task
    assert task["result"]["model"] == "gpt-image-1"
    [sent] = fake_openai.requests
    assert sent.path == EDIT_PATH
    assert sent.field("model") == "gpt-image-1"
    assert (sent.field("prompt") or "").startswith("add a party hat like the one in the reference")
    sizes = [PILImage.open(io.BytesIO(f.data)).size for f in sent.files()]
    assert sizes == [(320, 240), (200, 100)]  # the image first, then the reference
    edited = (await with_openai.client.get(f"/api/images/{task['result']['image_id']}")).json()
    assert (edited["source"], edited["parent_id"]) == ("edit", image["id"])
    assert (edited["width"], edited["height"]) == (48, 32)


async def test_openai_failures_become_task_errors(
    with_openai: Live, fake_openai: FakeOpenAI
) -> None:
    image = await upload(with_openai.client, solid((90, 90, 90)))
    fake_openai.reply_error(
        400, code="moderation_blocked", error_type="image_generation_user_error"
    )
    blocked = await with_openai.client.post(
        "/api/ai/edit", json={"image_id": image["id"], "prompt": "something", "provider": "openai"}
    )
    task = await with_openai.wait_task(blocked.json()["id"])
    assert (task["status"], task["error_code"], task["attempts"]) == ("failed", "ai.blocked", 1)

    fake_openai.reply_raw("{not json")
    fake_openai.reply_raw("{not json")
    fake_openai.reply_raw("{not json")
    unreadable = await with_openai.client.post(
        "/api/ai/caption", json={"image_id": image["id"], "provider": "openai"}
    )
    task = await with_openai.wait_task(unreadable.json()["id"], timeout=60)
    # A bad answer may be a fluke: the task engine tries again, up to the caption task's limit.
    assert (task["status"], task["error_code"]) == ("failed", "ai.bad_response")
    assert task["attempts"] == 3


async def test_auto_caption_uses_openai_when_it_is_the_default(
    make_live_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    app = make_live_app(
        env="dev",
        auto_caption=True,
        openai_api_key=SecretStr("sk-test-openai"),
        openai_base_url=fake_openai.base_url,
        openai_max_retries=0,
    )
    fake_openai.reply_text("A green square.")
    async for live in start_live(app):
        image = await upload(live.client, solid((30, 160, 40)))
        for _ in range(300):
            body = (await live.client.get(f"/api/images/{image['id']}")).json()
            if body["caption"]:
                break
            await asyncio.sleep(0.1)
        assert (body["caption"], body["caption_model"]) == ("A green square.", "gpt-4o-mini")
        assert [r.path for r in fake_openai.requests] == [CHAT_PATH]
