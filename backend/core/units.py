"""Quantities in the words people read in a message: "25 MB", "50 MP" (not 26214400 bytes)."""

from __future__ import annotations

_UNITS = ("bytes", "KB", "MB", "GB", "TB")


def human_bytes(n: int) -> str:
    """Binary multiples, as file managers show them: 26214400 → "25 MB", 1536 → "1.5 KB"."""
    value = float(n)
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{n} byte" if n == 1 else f"{n} bytes"
    text = f"{value:.1f}" if value < 10 else f"{value:.0f}"
    return f"{text.removesuffix('.0')} {_UNITS[unit]}"


def megapixels(pixels: int) -> str:
    """50000000 → "50 MP", 2500000 → "2.5 MP"; below 0.1 MP, the plain count."""
    mp = pixels / 1e6
    if mp < 0.1:
        return f"{pixels:,} pixels"
    text = f"{mp:.1f}" if mp < 10 else f"{mp:.0f}"
    return f"{text.removesuffix('.0')} MP"
