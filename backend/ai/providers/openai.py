"""Captions from a vision model and edits from ``gpt-image-1``, through the official openai SDK.

Captions go through chat completions with the image inlined as a data URL; edits go through
``images.edit`` with the image first and the reference (if any) second, as the multipart
``image[]`` array that GPT image models take. One ``AsyncOpenAI`` client lives as long as the
provider, so its connection pool is shared by every call.

Timeouts and retries are explicit: the SDK's default timeout is ten minutes. The SDK retries
429, 408, 409, 5xx, timeouts and refused connections itself (honouring ``Retry-After``), so a
``ProviderError`` raised here has already been tried ``max_retries + 1`` times.
"""

from __future__ import annotations

import base64
import binascii
import re

import httpx2
import openai
from openai.types import ImagesResponse
from openai.types.chat import ChatCompletion, ChatCompletionUserMessageParam

from backend.ai.providers.base import (
    BAD_RESPONSE,
    BLOCKED,
    CAPTION_PROMPT,
    PROVIDER_ERROR,
    RATE_LIMITED,
    TIMEOUT,
    Capabilities,
    Caption,
    ProviderError,
    ProviderSettings,
)
from backend.ai.providers.images import prepared
from backend.core.pixels import run_pixels
from backend.images.validation import sniff_format

_REFERENCE_NOTE = (
    " The second image is a reference: use what the instruction takes from it, and edit the "
    "first image."
)
# Error codes OpenAI gives a request its safety system refused: asking again gets the same no.
_BLOCK_CODES = frozenset({"content_policy_violation", "moderation_blocked", "content_filter"})
# A 429 for an exhausted balance is not a rate limit: waiting does not clear it.
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
_QUOTES = "\"'“”‘’«»"
# Room for a 30-word sentence, and for the reasoning tokens some vision models spend first.
_CAPTION_MAX_TOKENS = 300


class OpenAIProvider:
    name = "openai"
    capabilities = Capabilities(caption=True, edit=True, reference_image=True)

    def __init__(self, settings: ProviderSettings) -> None:
        if not settings.openai_api_key:
            raise ValueError("OpenAIProvider needs settings.openai_api_key")
        if settings.openai_timeout_seconds <= 0 or settings.openai_max_retries < 0:
            raise ValueError("openai_timeout_seconds must be positive, max_retries not negative")
        self.caption_model = settings.openai_caption_model
        self.edit_model = settings.openai_edit_model
        self._max_side = settings.image_max_side
        self._max_pixels = settings.max_image_pixels
        timeout = settings.openai_timeout_seconds
        self._client = openai.AsyncOpenAI(
            api_key=settings.openai_api_key,
            # None falls back to the SDK's OPENAI_BASE_URL lookup, then api.openai.com.
            base_url=settings.openai_base_url or None,
            timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)),
            max_retries=settings.openai_max_retries,
        )

    def check_edit(self, prompt: str, *, with_reference: bool) -> None:
        """Any instruction may be tried; only OpenAI itself can say no."""
        del prompt, with_reference

    async def caption(self, image: bytes) -> Caption:
        data, mime_type = await run_pixels(prepared, image, self._max_side, self._max_pixels)
        url = f"data:{mime_type};base64,{base64.b64encode(data).decode()}"
        message: ChatCompletionUserMessageParam = {
            "role": "user",
            "content": [
                {"type": "text", "text": CAPTION_PROMPT},
                {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
            ],
        }
        try:
            response = await self._client.chat.completions.create(
                model=self.caption_model,
                messages=[message],
                max_completion_tokens=_CAPTION_MAX_TOKENS,
            )
        except (openai.OpenAIError, ValueError) as exc:
            raise translate_error(exc) from exc
        return Caption(text=_caption_text(response), model=self.caption_model)

    async def edit(self, image: bytes, prompt: str, reference: bytes | None = None) -> bytes:
        files = [await self._upload(image, "image")]
        text = prompt
        if reference is not None:
            files.append(await self._upload(reference, "reference"))
            text += _REFERENCE_NOTE
        try:
            response = await self._client.images.edit(
                model=self.edit_model, image=files, prompt=text, n=1
            )
        except (openai.OpenAIError, ValueError) as exc:
            raise translate_error(exc) from exc
        return _edited_image(response)

    async def close(self) -> None:
        await self._client.close()

    async def _upload(self, data: bytes, stem: str) -> tuple[str, bytes, str]:
        encoded, mime_type = await run_pixels(prepared, data, self._max_side, self._max_pixels)
        suffix = "png" if mime_type == "image/png" else "jpg"
        return (f"{stem}.{suffix}", encoded, mime_type)


def translate_error(exc: BaseException) -> ProviderError:
    """The ``ai.*`` error for what the SDK raised, after its own retries ran out."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError("OpenAI did not answer in time.", code=TIMEOUT, retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(
            f"Could not reach OpenAI: {exc.__cause__ or exc}", code=PROVIDER_ERROR, retryable=True
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        code = exc.code or ""
        # The SDK's own message repeats the status; the envelope's message is the useful part.
        said = exc.body.get("message") if isinstance(exc.body, dict) else None
        detail = f"{status}{' ' + code if code else ''}: {said or exc.message}"
        if code in _BLOCK_CODES:
            return ProviderError(f"OpenAI refused the content ({detail}).", code=BLOCKED)
        if status == 429 and code in _QUOTA_CODES:
            return ProviderError(f"OpenAI quota is used up: {detail}", code=PROVIDER_ERROR)
        if status == 429:
            return ProviderError(f"OpenAI rate limit: {detail}", code=RATE_LIMITED, retryable=True)
        if status == 408:
            return ProviderError(f"OpenAI timed out: {detail}", code=TIMEOUT, retryable=True)
        if status >= 500:
            return ProviderError(f"OpenAI failed: {detail}", code=PROVIDER_ERROR, retryable=True)
        if status in (401, 403):
            return ProviderError(
                f"OpenAI refused the credentials ({detail}); check OPENAI_API_KEY.",
                code=PROVIDER_ERROR,
            )
        return ProviderError(f"OpenAI rejected the request: {detail}", code=PROVIDER_ERROR)
    if isinstance(exc, openai.ContentFilterFinishReasonError):
        return ProviderError("OpenAI filtered the answer.", code=BLOCKED)
    # A 200 whose body is not the JSON promised (APIResponseValidationError, JSONDecodeError,
    # pydantic's ValidationError): the answer arrived but cannot be read.
    return ProviderError(
        f"OpenAI sent an unreadable answer: {type(exc).__name__}", code=BAD_RESPONSE, retryable=True
    )


def _caption_text(response: ChatCompletion) -> str:
    if not isinstance(response, ChatCompletion) or not response.choices:
        raise ProviderError("OpenAI answered with no choices.", code=BAD_RESPONSE, retryable=True)
    choice = response.choices[0]
    if choice.finish_reason == "content_filter":
        raise ProviderError("OpenAI filtered the caption (content_filter).", code=BLOCKED)
    if choice.message.refusal:
        raise ProviderError(
            f'OpenAI refused to describe the image: "{choice.message.refusal[:200]}"',
            code=BLOCKED,
        )
    text = _clean_caption(choice.message.content or "")
    if not text:
        raise ProviderError(
            f"OpenAI answered with no caption text (finish reason {choice.finish_reason}).",
            code=BAD_RESPONSE,
            retryable=True,
        )
    return text


def _edited_image(response: ImagesResponse) -> bytes:
    if not isinstance(response, ImagesResponse):
        raise ProviderError("OpenAI sent an unreadable answer.", code=BAD_RESPONSE, retryable=True)
    for item in response.data or []:
        if not item.b64_json:
            continue
        try:
            data = base64.b64decode(item.b64_json, validate=True)
        except (binascii.Error, ValueError):
            continue
        # The task stores what comes back as an image, so it must be one we can read.
        if sniff_format(data) is not None:
            return data
    raise ProviderError("OpenAI answered with no image.", code=BAD_RESPONSE, retryable=True)


def _clean_caption(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text
