"""Limits in people's words, as the upload refusals show them."""

from __future__ import annotations

import pytest

from backend.imaging.units import human_bytes, human_pixels


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1024, "1 KB"),
        (1536, "1.5 KB"),
        (26_214_400, "25 MB"),
        (10 * 1024**2 + 1, "10 MB"),
        (5 * 1024**3, "5 GB"),
    ],
)
def test_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(50_000_000, "50 MP"), (12_500_000, "12.5 MP"), (3071, "3,071 pixels"), (1_000_000, "1 MP")],
)
def test_pixels(n: int, text: str) -> None:
    assert human_pixels(n) == text
