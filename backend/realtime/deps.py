"""The realtime hub (one Redis subscription per instance), provided by the composition root."""

from __future__ import annotations

from backend.core.resources import Component, Resources
from backend.realtime.hub import Hub

HUB: Component[Hub] = Component("the realtime hub")


def realtime_hub(resources: Resources) -> Hub:
    return HUB.of(resources)
