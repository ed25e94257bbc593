"""The AI providers of an app instance by name, a component the composition root provides."""

from __future__ import annotations

from backend.ai.providers.base import Provider
from backend.core.resources import Component, Resources

PROVIDERS: Component[dict[str, Provider]] = Component("the AI providers")


def ai_providers(resources: Resources) -> dict[str, Provider]:
    return PROVIDERS.of(resources)
