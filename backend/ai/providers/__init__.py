"""AI providers: ``gemini`` (google-genai) when GEMINI_API_KEY is set, ``openai`` (the openai
SDK) when OPENAI_API_KEY is set, ``local`` always.

Only the protocol and settings live at this level; the providers themselves are imported by
``build_providers`` when they are needed, so importing this package never loads either SDK.
"""

from backend.ai.providers.base import (
    Capabilities,
    Caption,
    Provider,
    ProviderError,
    ProviderSettings,
    build_providers,
)

__all__ = [
    "Capabilities",
    "Caption",
    "Provider",
    "ProviderError",
    "ProviderSettings",
    "build_providers",
]
