"""What each provider can do, told before any work: ``GET /api/ai/providers`` and the 422
refusals that come at the request, with no task created and no quota taken."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from backend.ai.providers.local import SUPPORTED_EDITS
from tests.ai.test_router import solid, upload
from tests.auth.test_router import assert_problem
from tests.conftest import AppFactory, SignedIn, SignUp


async def task_count(user: SignedIn) -> int:
    """AI tasks only: uploads start thumbnail tasks of their own."""
    answer = await user.client.get("/api/tasks", params={"limit": 100})
    assert answer.status_code == 200, answer.text
    return sum(task["kind"] in ("caption", "edit") for task in answer.json()["items"])


async def test_local_refuses_at_the_request_without_a_task_or_quota(
    make_app: AppFactory, sign_up: SignUp
) -> None:
    app = make_app(ai_daily_quota=1)
    user = await sign_up("refused", on=app)
    image = await upload(user.client, solid((40, 90, 200)), user.csrf)
    reference = await upload(user.client, solid((200, 90, 40)), user.csrf)

    hat = await user.client.post(
        "/api/ai/edit",
        json={"image_id": image["id"], "prompt": "add a party hat"},
        headers=user.csrf,
    )
    body = assert_problem(hat, 422, "ai.unsupported_edit")
    assert body["provider"] == "local"
    assert body["edits"] == list(SUPPORTED_EDITS)
    assert "'party', 'hat'" in str(body["detail"])
    assert len(str(body["detail"]).split()) <= 35  # a sentence or two, not a paragraph
    assert "hint" not in body  # operator settings are for admins
    assert "API_KEY" not in hat.text

    with_reference = await user.client.post(
        "/api/ai/edit",
        json={"image_id": image["id"], "prompt": "sepia", "reference_image_id": reference["id"]},
        headers=user.csrf,
    )
    assert "reference image" in str(assert_problem(with_reference, 422, "ai.unsupported_edit"))
    assert await task_count(user) == 0

    # The refusals took nothing from the quota of one: the first supported edit still runs.
    allowed = await user.client.post(
        "/api/ai/edit",
        json={"image_id": image["id"], "prompt": "Could you make it sepia, please? Thanks!"},
        headers=user.csrf,
    )
    assert allowed.status_code == 202, allowed.text
    assert await task_count(user) == 1
    spent = await user.client.post(
        "/api/ai/edit", json={"image_id": image["id"], "prompt": "blur"}, headers=user.csrf
    )
    assert_problem(spent, 429, "ai.quota_exceeded")


async def test_a_refusal_under_an_idempotency_key_is_not_stored_as_a_success(
    alice: SignedIn,
) -> None:
    image = await upload(alice.client, solid((1, 2, 3)), alice.csrf)
    headers = {**alice.csrf, "Idempotency-Key": "refusal-1"}
    for _ in range(2):
        answer = await alice.client.post(
            "/api/ai/edit",
            json={"image_id": image["id"], "prompt": "add a dragon"},
            headers=headers,
        )
        assert_problem(answer, 422, "ai.unsupported_edit")
    assert await task_count(alice) == 0


async def test_admins_are_told_how_to_get_a_provider_that_can(admin: SignedIn) -> None:
    image = await upload(admin.client, solid((9, 9, 9)), admin.csrf)
    answer = await admin.client.post(
        "/api/ai/edit",
        json={"image_id": image["id"], "prompt": "add a party hat"},
        headers=admin.csrf,
    )
    body = assert_problem(answer, 422, "ai.unsupported_edit")
    assert "GEMINI_API_KEY" in str(body["hint"])
    assert "OPENAI_API_KEY" in str(body["hint"])
    assert "alternatives" not in body  # none configured


def by_id(answer: Any) -> dict[str, dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return {p["id"]: p for p in answer.json()["providers"]}


async def test_providers_lists_every_provider_and_what_it_can_do(
    alice: SignedIn, admin: SignedIn, client: Any
) -> None:
    assert_problem(await client.get("/api/ai/providers"), 401, "auth.unauthenticated")

    seen = by_id(await alice.client.get("/api/ai/providers"))

    assert list(seen) == ["gemini", "openai", "local"]
    local = seen["local"]
    assert (local["configured"], local["default"]) == (True, True)
    assert local["capabilities"] == {"caption": True, "edit": True, "reference_image": False}
    assert local["edits"] == list(SUPPORTED_EDITS)
    assert local["models"] == {"caption": "local", "edit": "local"}
    for remote in ("gemini", "openai"):
        assert (seen[remote]["configured"], seen[remote]["default"]) == (False, False)
        assert seen[remote]["capabilities"]["reference_image"] is True
        assert "edits" not in seen[remote]
        assert "hint" not in seen[remote]
    assert seen["openai"]["models"] == {"caption": "gpt-4o-mini", "edit": "gpt-image-1"}
    assert "API_KEY" not in str(seen)

    told = by_id(await admin.client.get("/api/ai/providers"))
    assert told["gemini"]["hint"] == "Set GEMINI_API_KEY to enable it."
    assert told["openai"]["hint"] == "Set OPENAI_API_KEY to enable it."
    assert "hint" not in told["local"]


async def test_configured_providers_and_the_default(make_app: AppFactory, sign_up: SignUp) -> None:
    app = make_app(
        openai_api_key=SecretStr("sk-test"),
        openai_base_url="http://127.0.0.1:9/v1",
        openai_edit_model="gpt-image-1-mini",
    )
    user = await sign_up("providers", on=app)
    seen = by_id(await user.client.get("/api/ai/providers"))
    assert [(p, seen[p]["configured"], seen[p]["default"]) for p in seen] == [
        ("gemini", False, False),
        ("openai", True, True),
        ("local", True, False),
    ]
    assert seen["openai"]["models"]["edit"] == "gpt-image-1-mini"
    # A configured provider that takes any instruction is not refused up front.
    image = await upload(user.client, solid((5, 50, 5)), user.csrf)
    answer = await user.client.post(
        "/api/ai/edit",
        json={"image_id": image["id"], "prompt": "add a party hat"},
        headers=user.csrf,
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["kind"] == "edit"
    # Asking the local provider for it names the configured one that can, for anyone.
    local = await user.client.post(
        "/api/ai/edit",
        json={"image_id": image["id"], "prompt": "add a party hat", "provider": "local"},
        headers=user.csrf,
    )
    body = assert_problem(local, 422, "ai.unsupported_edit")
    assert body["alternatives"] == ["openai"]
    assert "hint" not in body
