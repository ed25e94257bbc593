"""What every AI provider offers, the errors it raises, and which providers a setup gets.

A provider turns image bytes into a caption or an edited image. Errors carry a stable ``code``
(recorded on the task) and whether trying again can help, so the task engine retries rate
limits, outages and timeouts but not a safety block or a request the provider cannot do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pydantic import SecretStr

    from backend.config import Settings

RATE_LIMITED = "ai.rate_limited"
PROVIDER_ERROR = "ai.provider_error"
BLOCKED = "ai.blocked"
TIMEOUT = "ai.timeout"
BAD_RESPONSE = "ai.bad_response"
UNSUPPORTED_EDIT = "ai.unsupported_edit"
# The input image itself cannot be decoded: no retry or other provider will do better.
BAD_IMAGE = "ai.bad_image"

# What the remote providers (Gemini, OpenAI) are asked for a caption: one wording, so the two
# give comparable alt text and a cached caption means the same whichever model made it.
CAPTION_PROMPT = (
    "Write alt text for this image: one concise sentence, at most 30 words, saying what it "
    "shows for someone who cannot see it. Answer with the sentence only, without quotes or "
    "a preamble."
)


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


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do, checked before a task is created so a refusal costs nothing."""

    caption: bool = True
    edit: bool = True
    reference_image: bool = True
    # The only edits a provider understands, when it is not open-ended (the local one).
    edits: tuple[str, ...] | None = None


class Provider(Protocol):
    name: str
    caption_model: str
    edit_model: str
    capabilities: Capabilities

    def check_edit(self, prompt: str, *, with_reference: bool) -> None:
        """Raise ``ai.unsupported_edit`` for an edit this provider will certainly refuse."""
        ...

    async def caption(self, image: bytes) -> Caption:
        """One sentence describing the image (JPEG, PNG, WebP or GIF bytes)."""
        ...

    async def edit(self, image: bytes, prompt: str, reference: bytes | None = None) -> bytes:
        """The image changed as ``prompt`` says, as encoded PNG or JPEG bytes."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ProviderSettings:
    gemini_api_key: str | None = None
    gemini_base_url: str | None = None
    caption_model: str = "gemini-2.5-flash"
    edit_model: str = "gemini-2.5-flash-image"
    timeout_seconds: float = 60.0
    max_retries: int = 2
    image_max_side: int = 1536
    # What an upload may decode to (ATELIER_MAX_IMAGE_PIXELS): every image a provider reads
    # passed that check, so refusing less here would fail images that were accepted.
    max_image_pixels: int = 50_000_000
    # First pause before the SDK retries a 429/5xx/timeout; later ones double, with jitter.
    retry_initial_delay_seconds: float = 0.5
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_caption_model: str = "gpt-4o-mini"
    openai_edit_model: str = "gpt-image-1"
    openai_timeout_seconds: float = 120.0
    openai_max_retries: int = 2

    def __repr__(self) -> str:
        # Keys must never reach a log line through a repr of the settings.
        gemini_key = "set" if self.gemini_api_key else None
        openai_key = "set" if self.openai_api_key else None
        return (
            f"ProviderSettings(gemini_api_key={gemini_key!r}, "
            f"gemini_base_url={self.gemini_base_url!r}, "
            f"caption_model={self.caption_model!r}, edit_model={self.edit_model!r}, "
            f"timeout_seconds={self.timeout_seconds!r}, max_retries={self.max_retries!r}, "
            f"image_max_side={self.image_max_side!r}, "
            f"retry_initial_delay_seconds={self.retry_initial_delay_seconds!r}, "
            f"openai_api_key={openai_key!r}, openai_base_url={self.openai_base_url!r}, "
            f"openai_caption_model={self.openai_caption_model!r}, "
            f"openai_edit_model={self.openai_edit_model!r}, "
            f"openai_timeout_seconds={self.openai_timeout_seconds!r}, "
            f"openai_max_retries={self.openai_max_retries!r})"
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderSettings:
        def secret(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value is not None else None

        return cls(
            gemini_api_key=secret(settings.gemini_api_key),
            gemini_base_url=settings.gemini_base_url,
            caption_model=settings.gemini_caption_model,
            edit_model=settings.gemini_edit_model,
            timeout_seconds=settings.gemini_timeout_seconds,
            max_retries=settings.gemini_max_retries,
            image_max_side=settings.ai_image_max_side,
            max_image_pixels=settings.max_image_pixels,
            openai_api_key=secret(settings.openai_api_key),
            openai_base_url=settings.openai_base_url,
            openai_caption_model=settings.openai_caption_model,
            openai_edit_model=settings.openai_edit_model,
            openai_timeout_seconds=settings.openai_timeout_seconds,
            openai_max_retries=settings.openai_max_retries,
        )


@dataclass(frozen=True)
class ProviderInfo:
    """A provider as ``GET /api/ai/providers`` shows it, whether or not it is configured."""

    id: str
    name: str
    capabilities: Capabilities
    models: dict[str, str]
    # What an operator sets to enable it; None when it needs nothing.
    setting: str | None


# In the order the default is chosen: the first configured one.
PROVIDER_ORDER = ("gemini", "openai", "local")


def catalog(settings: ProviderSettings) -> list[ProviderInfo]:
    """Every provider this build knows, configured or not, in ``PROVIDER_ORDER``."""
    from backend.ai.providers.local import LOCAL_CAPABILITIES, LOCAL_MODEL

    remote = Capabilities(caption=True, edit=True, reference_image=True)
    return [
        ProviderInfo(
            id="gemini",
            name="Google Gemini",
            capabilities=remote,
            models={"caption": settings.caption_model, "edit": settings.edit_model},
            setting="GEMINI_API_KEY",
        ),
        ProviderInfo(
            id="openai",
            name="OpenAI",
            capabilities=remote,
            models={"caption": settings.openai_caption_model, "edit": settings.openai_edit_model},
            setting="OPENAI_API_KEY",
        ),
        ProviderInfo(
            id="local",
            name="Local (offline)",
            capabilities=LOCAL_CAPABILITIES,
            models={"caption": LOCAL_MODEL, "edit": LOCAL_MODEL},
            setting=None,
        ),
    ]


def default_provider(configured: Iterable[str]) -> str:
    """The provider used when a request names none: the first configured in PROVIDER_ORDER."""
    available = set(configured)
    return next((name for name in PROVIDER_ORDER if name in available), "local")


def build_providers(settings: ProviderSettings) -> dict[str, Provider]:
    """``local`` always; ``gemini`` and ``openai`` only when their API key is set."""
    # Imported here: the SDKs are slow to import and unused by setups without a key.
    from backend.ai.providers.local import LocalProvider

    providers: dict[str, Provider] = {"local": LocalProvider(max_pixels=settings.max_image_pixels)}
    if settings.gemini_api_key:
        from backend.ai.providers.gemini import GeminiProvider

        providers["gemini"] = GeminiProvider(settings)
    if settings.openai_api_key:
        from backend.ai.providers.openai import OpenAIProvider

        providers["openai"] = OpenAIProvider(settings)
    return providers
