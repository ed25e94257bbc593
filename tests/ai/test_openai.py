"""The OpenAI provider through the real openai SDK against a local fake of OpenAI's API.

Each test checks both sides: what the SDK put on the wire (the fake records the JSON or the
multipart form) and what the provider made of the answer, with each failure's ``ai.*`` code
and whether the task engine should try again.
"""

from __future__ import annotations

import base64
import io
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from PIL import Image

from backend.ai.providers.base import (
    BAD_IMAGE,
    BAD_RESPONSE,
    BLOCKED,
    PROVIDER_ERROR,
    RATE_LIMITED,
    TIMEOUT,
    ProviderError,
    ProviderSettings,
    build_providers,
)
from backend.ai.providers.openai import CAPTION_PROMPT, OpenAIProvider
from backend.config import Settings
from tests.ai.fake_gemini import solid_png
from tests.ai.fake_openai import CHAT_PATH, EDIT_PATH, FakeOpenAI, data_url_bytes
from tests.photos import PORTRAIT as PORTRAIT_PATH

API_KEY = "test-openai-key"
MakeOpenAI = Callable[..., OpenAIProvider]
PORTRAIT = PORTRAIT_PATH.read_bytes()


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(out, "JPEG")
    return out.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


async def raises(call: Awaitable[object]) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await call
    return info.value


@pytest.fixture
async def make_openai(fake_openai: FakeOpenAI) -> AsyncIterator[MakeOpenAI]:
    made: list[OpenAIProvider] = []

    def make(**overrides: object) -> OpenAIProvider:
        options: dict[str, object] = {
            "openai_api_key": API_KEY,
            "openai_base_url": fake_openai.base_url,
            "openai_timeout_seconds": 10.0,
            "openai_max_retries": 2,
        }
        options.update(overrides)
        provider = OpenAIProvider(ProviderSettings(**options))  # type: ignore[arg-type]
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


@pytest.fixture
async def provider(make_openai: MakeOpenAI) -> OpenAIProvider:
    return make_openai()


# --- success: what goes on the wire ----------------------------------------------------------


async def test_caption_sends_the_model_prompt_a_downscaled_image_and_the_key(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_text('  "An astronaut in a white suit,\n smiling."  ')

    caption = await provider.caption(PORTRAIT)

    assert caption.text == "An astronaut in a white suit, smiling."
    assert caption.model == "gpt-4o-mini"
    [sent] = fake_openai.requests
    assert sent.path == CHAT_PATH
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.json["model"] == "gpt-4o-mini"
    assert sent.json["max_completion_tokens"] > 0
    assert sent.texts() == [CAPTION_PROMPT]
    [url] = sent.image_urls()
    mime_type, image = data_url_bytes(url)
    assert mime_type == "image/jpeg"
    assert size_of(image) == size_of(PORTRAIT)  # 512 px: already under the 1536 bound


async def test_caption_images_are_bounded(make_openai: MakeOpenAI, fake_openai: FakeOpenAI) -> None:
    provider = make_openai(image_max_side=400)
    await provider.caption(jpeg(2000, 1000))
    _, image = data_url_bytes(fake_openai.requests[0].image_urls()[0])
    assert size_of(image) == (400, 200)


async def test_edit_sends_a_multipart_form_with_both_images_and_returns_the_png(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    result_png = solid_png(32, 24, (10, 20, 30))
    fake_openai.reply_image(result_png)

    edited = await provider.edit(jpeg(300, 200), "add a party hat", reference=PORTRAIT)

    assert edited == result_png
    [sent] = fake_openai.requests
    assert sent.path == EDIT_PATH
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.field("model") == "gpt-image-1"
    prompt = sent.field("prompt") or ""
    assert prompt.startswith("add a party hat")
    assert "second image is a reference" in prompt
    files = sent.files()
    # GPT image models take several images as the array field ``image[]``, edited one first.
    assert [(f.name, f.filename, f.content_type) for f in files] == [
        ("image[]", "image.jpg", "image/jpeg"),
        ("image[]", "reference.jpg", "image/jpeg"),
    ]
    assert size_of(files[0].data) == (300, 200)
    assert size_of(files[1].data) == size_of(PORTRAIT)


async def test_edit_without_a_reference_sends_one_image(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    await provider.edit(jpeg(64, 64), "make it sepia")
    [sent] = fake_openai.requests
    assert sent.field("prompt") == "make it sepia"
    assert len(sent.files()) == 1


async def test_transparent_images_go_as_png(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    out = io.BytesIO()
    Image.new("RGBA", (40, 30), (255, 0, 0, 100)).save(out, "PNG")
    await provider.edit(out.getvalue(), "remove the background")
    [file] = fake_openai.requests[0].files()
    assert (file.filename, file.content_type) == ("image.png", "image/png")


async def test_one_client_serves_every_call(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    client = provider._client
    await provider.caption(jpeg(32, 32))
    await provider.edit(jpeg(32, 32), "sepia")
    assert provider._client is client
    assert len(fake_openai.requests) == 2


# --- failures and their codes ----------------------------------------------------------------


async def test_a_rate_limit_is_retried_by_the_sdk_then_reported(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_error(429, code="rate_limit_exceeded", times=10)

    error = await raises(provider.caption(jpeg(32, 32)))

    assert (error.code, error.retryable) == (RATE_LIMITED, True)
    assert len(fake_openai.requests) == 3  # max_retries=2 → three attempts
    assert "rate_limit_exceeded" in str(error)


async def test_a_rate_limit_that_clears_is_invisible(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_error(429)
    fake_openai.reply_image()

    edited = await provider.edit(jpeg(32, 32), "sepia")

    assert edited == solid_png()
    assert len(fake_openai.requests) == 2
    # The retried multipart body is whole again: both attempts carried the image.
    assert [len(r.files()) for r in fake_openai.requests] == [1, 1]


async def test_an_exhausted_balance_is_not_retried_by_the_task(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_error(429, code="insufficient_quota", error_type="quota", times=3)
    error = await raises(provider.caption(jpeg(32, 32)))
    assert (error.code, error.retryable) == (PROVIDER_ERROR, False)


@pytest.mark.parametrize("code", ["moderation_blocked", "content_policy_violation"])
async def test_a_content_policy_refusal_is_blocked_and_final(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, code: str
) -> None:
    fake_openai.reply_error(
        400,
        code=code,
        error_type="image_generation_user_error",
        message="Your request was rejected by the safety system.",
    )

    error = await raises(provider.edit(jpeg(32, 32), "something unsafe"))

    assert (error.code, error.retryable) == (BLOCKED, False)
    assert "safety system" in str(error)
    assert len(fake_openai.requests) == 1


async def test_a_refused_or_filtered_caption_is_blocked(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_refusal("I can't describe this image.")
    refused = await raises(provider.caption(jpeg(32, 32)))
    fake_openai.reply_filtered()
    filtered = await raises(provider.caption(jpeg(32, 32)))
    assert [(e.code, e.retryable) for e in (refused, filtered)] == [(BLOCKED, False)] * 2
    assert "I can't describe this image." in str(refused)


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retried_and_retryable(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, status: int
) -> None:
    fake_openai.reply_error(status, error_type="server_error", times=5)

    error = await raises(provider.edit(jpeg(32, 32), "sepia"))

    assert (error.code, error.retryable) == (PROVIDER_ERROR, True)
    assert len(fake_openai.requests) == 3


@pytest.mark.parametrize(("status", "needle"), [(400, "rejected"), (401, "OPENAI_API_KEY")])
async def test_client_errors_are_final(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, status: int, needle: str
) -> None:
    fake_openai.reply_error(status, code="invalid_value")

    error = await raises(provider.caption(jpeg(32, 32)))

    assert (error.code, error.retryable) == (PROVIDER_ERROR, False)
    assert needle in str(error)
    assert len(fake_openai.requests) == 1  # the SDK does not retry a 4xx either


async def test_a_stall_times_out_then_the_sdk_retries_it(
    make_openai: MakeOpenAI, fake_openai: FakeOpenAI
) -> None:
    provider = make_openai(openai_timeout_seconds=0.5, openai_max_retries=1)
    fake_openai.stall(times=5)

    started = time.monotonic()
    error = await raises(provider.caption(jpeg(32, 32)))
    elapsed = time.monotonic() - started

    assert (error.code, error.retryable) == (TIMEOUT, True)
    assert len(fake_openai.requests) == 2
    # Two half-second attempts and the SDK's backoff, not the SDK's ten-minute default.
    assert elapsed < 10


@pytest.mark.parametrize(
    "script",
    [
        lambda fake: fake.reply_malformed(),
        lambda fake: fake.reply_raw("<html>gateway</html>"),
        lambda fake: fake.reply_raw('{"object": "chat.completion"}'),
        lambda fake: fake.reply_empty(),
    ],
    ids=["truncated", "not-json", "no-choices", "empty-text"],
)
async def test_an_unreadable_caption_answer_is_a_bad_response(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, script: Callable[[FakeOpenAI], None]
) -> None:
    script(fake_openai)
    error = await raises(provider.caption(jpeg(32, 32)))
    assert (error.code, error.retryable) == (BAD_RESPONSE, True)


@pytest.mark.parametrize(
    "body",
    [
        '{"created": 1, "data": []}',
        '{"created": 1, "data": [{"b64_json": "!!not base64!!"}]}',
        '{"created": 1, "data": [{"b64_json": "' + base64.b64encode(b"text").decode() + '"}]}',
        '{"created": 1, "data": [{"url": "https://example.invalid/x.png"}]}',
    ],
    ids=["no-data", "bad-base64", "not-an-image", "url-only"],
)
async def test_an_edit_answer_without_a_usable_image_is_a_bad_response(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, body: str
) -> None:
    fake_openai.reply_raw(body)
    error = await raises(provider.edit(jpeg(32, 32), "sepia"))
    assert (error.code, error.retryable) == (BAD_RESPONSE, True)


async def test_an_unreachable_server_is_a_retryable_provider_error(
    make_openai: MakeOpenAI,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = make_openai(openai_base_url=f"http://127.0.0.1:{port}/v1", openai_max_retries=0)
    error = await raises(provider.caption(jpeg(32, 32)))
    assert (error.code, error.retryable) == (PROVIDER_ERROR, True)


async def test_an_unreadable_image_is_refused_before_any_request(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    error = await raises(provider.edit(b"not an image", "sepia"))
    assert (error.code, error.retryable) == (BAD_IMAGE, False)
    assert fake_openai.requests == []


# --- configuration ---------------------------------------------------------------------------


async def test_the_key_builds_the_provider_and_never_shows_in_a_repr(
    fake_openai: FakeOpenAI,
) -> None:
    settings = ProviderSettings(
        openai_api_key=API_KEY,
        openai_base_url=fake_openai.base_url,
        openai_caption_model="gpt-vision-x",
        openai_edit_model="gpt-image-y",
    )
    providers = build_providers(settings)
    try:
        assert sorted(providers) == ["local", "openai"]
        openai = providers["openai"]
        assert (openai.caption_model, openai.edit_model) == ("gpt-vision-x", "gpt-image-y")
        await openai.caption(jpeg(16, 16))
        assert fake_openai.requests[0].json["model"] == "gpt-vision-x"
        assert API_KEY not in repr(settings)
    finally:
        for built in providers.values():
            await built.close()


def test_settings_read_the_plain_and_prefixed_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "plain-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("ATELIER_ENV", "dev")
    settings = Settings(_env_file=None)
    from_settings = ProviderSettings.from_settings(settings)
    assert from_settings.openai_api_key == "plain-key"
    assert from_settings.openai_base_url == "http://127.0.0.1:9/v1"
    assert (from_settings.openai_caption_model, from_settings.openai_edit_model) == (
        "gpt-4o-mini",
        "gpt-image-1",
    )
    monkeypatch.setenv("ATELIER_OPENAI_API_KEY", "prefixed-key")
    assert ProviderSettings.from_settings(Settings(_env_file=None)).openai_api_key == "prefixed-key"
