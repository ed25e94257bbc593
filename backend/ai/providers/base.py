"""What every AI provider offers, the errors it raises, and which providers a setup gets.

A provider turns image bytes into a caption or an edited image. Errors carry a stable ``code``
(recorded on the task) and whether trying again can help, so the task engine retries rate
limits, outages and timeouts but not a safety block or a request the provider cannot do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

RATE_LIMITED = "ai.rate_limited"
PROVIDER_ERROR = "ai.provider_error"
BLOCKED = "ai.blocked"
TIMEOUT = "ai.timeout"
BAD_RESPONSE = "ai.bad_response"
UNSUPPORTED_EDIT = "ai.unsupported_edit"
# The input image itself cannot be decoded: no retry or other provider will do better.
BAD_IMAGE = "ai.bad_image"


@dataclass(frozen=True)
class Caption:
    text: str
    model: str


class ProviderError(Exception):
    """A provider call that failed; ``code`` is one of the ``ai.*`` codes above."""

    def __init__(self, message: str, *, code: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable

    def __repr__(self) -> str:
        return f"ProviderError({str(self)!r}, code={self.code!r}, retryable={self.retryable})"


class Provider(Protocol):
    name: str
    caption_model: str
    edit_model: str

    async def caption(self, image: bytes) -> Caption:
        """One sentence describing the image (JPEG, PNG, WebP or GIF bytes)."""
        ...

    async def edit(self, image: bytes, prompt: str, reference: bytes | None = None) -> bytes:
        """The image changed as ``prompt`` says, as encoded PNG or JPEG bytes."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ProviderSettings:
    gemini_api_key: str | None
    gemini_base_url: str | None = None
    caption_model: str = "gemini-2.5-flash"
    edit_model: str = "gemini-2.5-flash-image"
    timeout_seconds: float = 60.0
    max_retries: int = 2
    image_max_side: int = 1536
    # First pause before the SDK retries a 429/5xx/timeout; later ones double, with jitter.
    retry_initial_delay_seconds: float = 0.5

    def __repr__(self) -> str:
        # The key must never reach a log line through a repr of the settings.
        key = "set" if self.gemini_api_key else None
        return (
            f"ProviderSettings(gemini_api_key={key!r}, gemini_base_url={self.gemini_base_url!r}, "
            f"caption_model={self.caption_model!r}, edit_model={self.edit_model!r}, "
            f"timeout_seconds={self.timeout_seconds!r}, max_retries={self.max_retries!r}, "
            f"image_max_side={self.image_max_side!r}, "
            f"retry_initial_delay_seconds={self.retry_initial_delay_seconds!r})"
        )


def build_providers(settings: ProviderSettings) -> dict[str, Provider]:
    """``local`` always; ``gemini`` only when an API key is set."""
    # Imported here: google-genai is slow to import and unused by setups without a key.
    from backend.ai.providers.local import LocalProvider

    providers: dict[str, Provider] = {"local": LocalProvider()}
    if settings.gemini_api_key:
        from backend.ai.providers.gemini import GeminiProvider

        providers["gemini"] = GeminiProvider(settings)
    return providers
