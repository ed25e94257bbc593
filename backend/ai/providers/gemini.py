"""Captions and edits from Gemini through google-genai.

One ``genai.Client`` lives as long as the provider: the SDK keeps a connection pool per event
loop inside it, and a client that is garbage-collected closes itself under any request still
using it. Timeouts and retries are explicit because the SDK's defaults are "wait forever" and
"never retry"; the SDK retries only 429, 5xx, timeouts and refused connections, each of which a
later attempt can fix.

Images never leave at full size (see ``backend.ai.providers.images``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import httpx2
from google import genai
from google.genai import errors, types

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

_EDIT_INTRO = "Edit this image as the instruction below says and answer with the edited image."
_REFERENCE_INTRO = (
    "A second image follows as a reference: use what the instruction takes from it, and keep "
    "the first image as the one being edited."
)

RETRY_STATUS_CODES = (429, 500, 502, 503, 504)
# Finish reasons and prompt block reasons meaning the content itself was refused: asking again
# gives the same refusal, so these are not retried.
_BLOCK_FINISH_REASONS = frozenset(
    {
        "SAFETY",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "RECITATION",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    }
)
_QUOTES = "\"'“”‘’«»"


class GeminiProvider:
    name = "gemini"
    capabilities = Capabilities(caption=True, edit=True, reference_image=True)

    def __init__(self, settings: ProviderSettings) -> None:
        if not settings.gemini_api_key:
            raise ValueError("GeminiProvider needs settings.gemini_api_key")
        if settings.timeout_seconds <= 0 or settings.max_retries < 0:
            raise ValueError("timeout_seconds must be positive and max_retries not negative")
        self.caption_model = settings.caption_model
        self.edit_model = settings.edit_model
        self._max_side = settings.image_max_side
        self._max_pixels = settings.max_image_pixels
        delay = settings.retry_initial_delay_seconds
        http_options = types.HttpOptions(
            base_url=settings.gemini_base_url or None,
            # HttpOptions.timeout is in milliseconds; left unset the SDK would wait forever.
            timeout=max(1, round(settings.timeout_seconds * 1000)),
            retry_options=types.HttpRetryOptions(
                attempts=settings.max_retries + 1,
                initial_delay=delay,
                max_delay=max(delay, 16 * delay),
                # The SDK's default jitter adds up to a whole second per retry at any delay.
                jitter=delay,
                http_status_codes=list(RETRY_STATUS_CODES),
            ),
        )
        # enterprise=False: an inherited GOOGLE_GENAI_USE_VERTEXAI must not switch backends.
        self._client = genai.Client(
            api_key=settings.gemini_api_key, enterprise=False, http_options=http_options
        )

    def check_edit(self, prompt: str, *, with_reference: bool) -> None:
        """Any instruction may be tried; only Gemini itself can say no."""
        del prompt, with_reference

    async def caption(self, image: bytes) -> Caption:
        data, mime_type = await run_pixels(prepared, image, self._max_side, self._max_pixels)
        response = await self._generate(
            self.caption_model,
            [types.Part.from_bytes(data=data, mime_type=mime_type), CAPTION_PROMPT],
            None,
        )
        _raise_if_blocked(response)
        text = _clean_caption(_response_text(response))
        if not text:
            raise ProviderError(
                f"Gemini answered with no caption text{_finish_note(response)}.",
                code=BAD_RESPONSE,
                retryable=True,
            )
        return Caption(text=text, model=self.caption_model)

    async def edit(self, image: bytes, prompt: str, reference: bytes | None = None) -> bytes:
        data, mime_type = await run_pixels(prepared, image, self._max_side, self._max_pixels)
        contents: list[Any] = [_EDIT_INTRO, types.Part.from_bytes(data=data, mime_type=mime_type)]
        if reference is not None:
            ref_data, ref_type = await run_pixels(
                prepared, reference, self._max_side, self._max_pixels
            )
            contents += [_REFERENCE_INTRO, types.Part.from_bytes(data=ref_data, mime_type=ref_type)]
        contents.append(f"Instruction: {prompt}")
        config = types.GenerateContentConfig(
            # TEXT alongside IMAGE: earlier Gemini image models refuse an IMAGE-only request.
            response_modalities=[types.Modality.TEXT, types.Modality.IMAGE],
        )
        response = await self._generate(self.edit_model, contents, config)
        _raise_if_blocked(response)
        edited = _first_image(response)
        if edited is None:
            said = _response_text(response).strip()
            note = f': "{said[:200]}"' if said else _finish_note(response)
            raise ProviderError(
                f"Gemini answered with no image{note}.", code=BAD_RESPONSE, retryable=True
            )
        return edited

    async def close(self) -> None:
        await self._client.aio.aclose()
        self._client.close()

    async def _generate(
        self,
        model: str,
        contents: Sequence[Any],
        config: types.GenerateContentConfig | None,
    ) -> types.GenerateContentResponse:
        try:
            return await self._client.aio.models.generate_content(
                model=model, contents=list(contents), config=config
            )
        except (errors.APIError, httpx2.TransportError, ValueError) as exc:
            raise translate_error(exc) from exc


def translate_error(exc: BaseException) -> ProviderError:
    """The ``ai.*`` error for what the SDK raised, after its own retries ran out."""
    if isinstance(exc, errors.APIError):
        status = int(exc.code or 0)
        detail = f"{status} {exc.status or ''}: {exc.message or ''}".strip(" :")
        if status == 429:
            return ProviderError(f"Gemini rate limit: {detail}", code=RATE_LIMITED, retryable=True)
        if status == 408:
            return ProviderError(f"Gemini timed out: {detail}", code=TIMEOUT, retryable=True)
        if status >= 500:
            return ProviderError(f"Gemini failed: {detail}", code=PROVIDER_ERROR, retryable=True)
        if status in (401, 403):
            return ProviderError(
                f"Gemini refused the credentials ({detail}); check GEMINI_API_KEY.",
                code=PROVIDER_ERROR,
            )
        return ProviderError(f"Gemini rejected the request: {detail}", code=PROVIDER_ERROR)
    if isinstance(exc, httpx2.TimeoutException):
        return ProviderError(
            f"Gemini did not answer in time ({type(exc).__name__}).", code=TIMEOUT, retryable=True
        )
    if isinstance(exc, httpx2.TransportError):
        return ProviderError(
            f"Could not reach Gemini: {type(exc).__name__}: {exc}",
            code=PROVIDER_ERROR,
            retryable=True,
        )
    # JSONDecodeError, pydantic's ValidationError and the SDK's UnknownApiResponseError are all
    # ValueErrors: the answer arrived but was not a response we can read.
    return ProviderError(
        f"Gemini sent an unreadable answer: {type(exc).__name__}", code=BAD_RESPONSE, retryable=True
    )


# --- answers in ------------------------------------------------------------------------------


def _reason_name(reason: object) -> str:
    return str(getattr(reason, "value", reason) or "")


def _raise_if_blocked(response: types.GenerateContentResponse) -> None:
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        why = _reason_name(feedback.block_reason)
        extra = f": {feedback.block_reason_message}" if feedback.block_reason_message else ""
        raise ProviderError(f"Gemini blocked the request ({why}){extra}.", code=BLOCKED)
    for candidate in response.candidates or []:
        why = _reason_name(candidate.finish_reason)
        if why in _BLOCK_FINISH_REASONS:
            raise ProviderError(f"Gemini blocked the answer ({why}).", code=BLOCKED)


def _parts(response: types.GenerateContentResponse) -> list[types.Part]:
    found: list[types.Part] = []
    for candidate in response.candidates or []:
        if candidate.content is not None:
            found.extend(candidate.content.parts or [])
    return found


def _response_text(response: types.GenerateContentResponse) -> str:
    # Thought summaries are not the answer; only the first candidate is asked for.
    candidates = response.candidates or []
    content = candidates[0].content if candidates else None
    if content is None:
        return ""
    return "".join(p.text for p in content.parts or [] if p.text and not p.thought)


def _first_image(response: types.GenerateContentResponse) -> bytes | None:
    for part in _parts(response):
        blob = part.inline_data
        if blob is None or not blob.data or part.thought:
            continue
        if not (blob.mime_type or "").startswith("image/"):
            continue
        # The task stores what comes back as an image, so it must be one we can read.
        if sniff_format(blob.data) is None:
            continue
        return blob.data
    return None


def _finish_note(response: types.GenerateContentResponse) -> str:
    reasons = sorted({_reason_name(c.finish_reason) for c in response.candidates or []} - {""})
    return f" (finish reason {', '.join(reasons)})" if reasons else ""


def _clean_caption(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text
