"""Limits in refusal messages read as people read them (issue 16: "26214400 bytes")."""

from __future__ import annotations

import pytest

from backend.core.units import human_bytes, megapixels
from backend.images.validation import ValidationFailure, check_declared
from backend.imaging.decode import too_many_pixels


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (1023, "1023 bytes"),
        (1536, "1.5 KB"),
        (26_214_400, "25 MB"),
        (10 * 1024**3, "10 GB"),
    ],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    ("n", "text"), [(50_000_000, "50 MP"), (2_500_000, "2.5 MP"), (12_000, "12,000 pixels")]
)
def test_megapixels(n: int, text: str) -> None:
    assert megapixels(n) == text


def test_refusals_name_the_limit_in_units() -> None:
    with pytest.raises(ValidationFailure) as refused:
        check_declared("big.jpg", "image/jpeg", 30_000_000, max_bytes=26_214_400)
    assert str(refused.value) == "The file is larger than the 25 MB allowed."
    assert str(too_many_pixels(50_000_000)) == "The image has more than the 50 MP allowed."
