"""Limits in the words people use: 26214400 bytes is "25 MB", 50000000 pixels is "50 MP"."""

from __future__ import annotations


def _short(value: float) -> str:
    # One decimal only when it says something: "25 MB", "2.5 MB", never "25.0 MB".
    return f"{value:.0f}" if abs(value - round(value)) < 0.05 else f"{value:.1f}"


def human_bytes(n: int) -> str:
    """Binary multiples under the familiar names (what file managers show)."""
    if n < 1024:
        return "1 byte" if n == 1 else f"{n} bytes"
    if n < 1024**2:
        return f"{_short(n / 1024)} KB"
    if n < 1024**3:
        return f"{_short(n / 1024**2)} MB"
    return f"{_short(n / 1024**3)} GB"


def human_pixels(n: int) -> str:
    """Megapixels as cameras count them (decimal)."""
    if n < 1_000_000:
        return f"{n:,} pixels"
    return f"{_short(n / 1_000_000)} MP"
