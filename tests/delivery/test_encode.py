"""Encoding for delivery: every format decodes back, no metadata leaves, sRGB is attached."""

from __future__ import annotations

import io

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageCms

from backend.imaging import encode
from tests.photos import PORTRAIT


def portrait() -> npt.NDArray[np.uint8]:
    pixels = cv2.imread(str(PORTRAIT), cv2.IMREAD_COLOR)
    assert pixels is not None
    return np.asarray(pixels, dtype=np.uint8)


@pytest.mark.parametrize(
    ("fmt", "name"), [("jpeg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"), ("avif", "AVIF")]
)
def test_every_format_round_trips_with_srgb_and_no_metadata(fmt: str, name: str) -> None:
    pixels = portrait()
    data = encode.encode(pixels, fmt, 90)  # type: ignore[arg-type]
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == name
    assert image.size == (pixels.shape[1], pixels.shape[0])
    assert not image.getexif()
    assert "xmp" not in image.info
    assert "exif" not in image.info
    profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
    assert "sRGB" in ImageCms.getProfileDescription(profile)
    # Colours survive: channels are not swapped (BGR in, RGB in the file).
    back = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    assert float(np.abs(back.astype(np.int16) - pixels.astype(np.int16)).mean()) < 6


def test_alpha_is_kept_where_the_format_has_it_and_flattened_on_white_otherwise() -> None:
    pixels = np.zeros((20, 20, 4), dtype=np.uint8)
    pixels[5:15, 5:15] = (0, 0, 255, 255)  # an opaque red square on transparency
    png = Image.open(io.BytesIO(encode.encode(pixels, "png", 90)))
    assert png.mode == "RGBA"
    assert png.getpixel((0, 0)) == (0, 0, 0, 0)
    assert png.getpixel((10, 10)) == (255, 0, 0, 255)
    jpeg = Image.open(io.BytesIO(encode.encode(pixels, "jpeg", 95))).convert("RGB")
    corner = jpeg.getpixel((0, 0))
    assert isinstance(corner, tuple)
    assert min(corner) > 240


def test_quality_matters_and_bad_arguments_are_refused() -> None:
    pixels = portrait()
    assert len(encode.encode(pixels, "webp", 10)) < len(encode.encode(pixels, "webp", 90)) / 2
    with pytest.raises(ValueError, match="quality"):
        encode.encode(pixels, "jpeg", 0)
    with pytest.raises(ValueError, match="format"):
        encode.encode(pixels, "gif", 80)  # type: ignore[arg-type]
