"""Compressed JPEG output: quality, colour handling, orientation, size bounds, no metadata."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from backend.images.compress import to_jpeg
from tests.images import samples

WHITE = (255, 255, 255)


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    assert im.format == "JPEG"
    return im


def rgb_at(im: Image.Image, fx: float, fy: float) -> tuple[int, int, int]:
    x = min(im.width - 1, int(im.width * fx))
    y = min(im.height - 1, int(im.height * fy))
    r, g, b = im.convert("RGB").getpixel((x, y))  # type: ignore[misc]
    return int(r), int(g), int(b)


def close_to(actual: tuple[int, int, int], expected: tuple[int, int, int], tol: int = 14) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def jpeg_markers(data: bytes) -> list[int]:
    """Marker bytes of every segment before the image data, in order."""
    assert data[:2] == b"\xff\xd8"
    markers = []
    pos = 2
    while True:
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:
            return markers
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length


def photo_png(width: int, height: int) -> bytes:
    return samples.png(image=Image.fromarray(samples.photo_like(width, height)))


# --- quality ---------------------------------------------------------------------------------


def test_size_grows_with_quality() -> None:
    source = photo_png(400, 300)

    sizes = [len(to_jpeg(source, quality=q)[0]) for q in (5, 20, 40, 60, 80, 95)]

    assert sizes == sorted(sizes)
    assert len(set(sizes)) == len(sizes)


def test_low_quality_is_smaller_than_the_source() -> None:
    source = samples.encode_jpeg_cv2(samples.photo_like(640, 480), quality=95)

    data, width, height = to_jpeg(source, quality=50)

    assert (width, height) == (640, 480)
    assert len(data) < len(source) / 2
    assert decode(data).size == (640, 480)


@pytest.mark.parametrize("quality", [0, 96, 100, -5])
def test_quality_out_of_range(quality: int) -> None:
    with pytest.raises(ValueError, match="quality"):
        to_jpeg(samples.png(), quality=quality)


@pytest.mark.parametrize("quality", [1, 95])
def test_quality_bounds_are_accepted(quality: int) -> None:
    data, _, _ = to_jpeg(samples.png(), quality=quality)

    assert decode(data).size == (64, 48)


# --- colour handling -------------------------------------------------------------------------


def test_alpha_is_flattened_onto_white() -> None:
    data, width, height = to_jpeg(samples.png_rgba(), quality=90)

    im = decode(data)
    assert im.mode == "RGB"
    assert (width, height) == im.size == (80, 60)
    assert close_to(rgb_at(im, 0.2, 0.5), samples.RED)
    # Fully transparent black pixels come out white, not black.
    assert close_to(rgb_at(im, 0.8, 0.5), WHITE, tol=4)


def test_semi_transparent_pixels_blend_with_white() -> None:
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[...] = (0, 0, 0, 128)
    data, _, _ = to_jpeg(samples.png(image=Image.fromarray(rgba, "RGBA")), quality=95)

    assert close_to(rgb_at(decode(data), 0.5, 0.5), (127, 127, 127), tol=4)


def test_transparent_webp_is_flattened() -> None:
    rgba = Image.new("RGBA", (50, 40), (0, 0, 0, 0))
    rgba.paste((*samples.BLUE, 255), (0, 0, 25, 40))
    source = samples.webp(image=rgba, lossless=True)

    im = decode(to_jpeg(source, quality=90)[0])

    assert close_to(rgb_at(im, 0.2, 0.5), samples.BLUE)
    assert close_to(rgb_at(im, 0.8, 0.5), WHITE, tol=4)


def test_palette_with_transparency() -> None:
    im = decode(to_jpeg(samples.png_palette(transparent=True), quality=90)[0])

    assert im.size == (80, 60)
    assert close_to(rgb_at(im, 0.1, 0.1), samples.RED)
    # The blue palette entry is the transparent one.
    assert close_to(rgb_at(im, 0.9, 0.9), WHITE, tol=4)


@pytest.mark.parametrize("source", ["png_palette", "gif"])
def test_palette_colours_survive(source: str) -> None:
    im = decode(to_jpeg(getattr(samples, source)(), quality=90)[0])

    assert close_to(rgb_at(im, 0.1, 0.1), samples.RED)
    assert close_to(rgb_at(im, 0.9, 0.9), samples.BLUE)


def test_16_bit_rgb() -> None:
    im = decode(to_jpeg(samples.png_16bit_rgb(), quality=90)[0])

    assert im.size == (80, 60)
    assert close_to(rgb_at(im, 0.5, 0.5), samples.RED)


@pytest.mark.parametrize(("value", "expected"), [(0x8000, 128), (0xFFFF, 255), (0x0100, 1)])
def test_16_bit_gray(value: int, expected: int) -> None:
    im = decode(to_jpeg(samples.png_16bit_gray(value), quality=95)[0])

    assert close_to(rgb_at(im, 0.5, 0.5), (expected, expected, expected), tol=3)


@pytest.mark.parametrize("source", ["grayscale_jpeg", "cmyk_jpeg", "png_gray", "webp", "mpo"])
def test_other_modes_decode(source: str) -> None:
    data, width, height = to_jpeg(getattr(samples, source)(), quality=80)

    im = decode(data)
    assert im.mode == "RGB"
    assert im.size == (width, height)


def test_cmyk_colour() -> None:
    im = decode(to_jpeg(samples.cmyk_jpeg(), quality=90)[0])

    assert close_to(rgb_at(im, 0.5, 0.5), samples.RED, tol=40)


# --- orientation -----------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    data, width, height = to_jpeg(samples.oriented_jpeg(orientation), quality=90)

    im = decode(data)
    assert (width, height) == im.size == samples.UPRIGHT_SIZE
    assert close_to(rgb_at(im, 0.1, 0.1), samples.RED)
    assert close_to(rgb_at(im, 0.9, 0.9), samples.BLUE)
    assert close_to(rgb_at(im, 0.9, 0.1), samples.BLUE)


def test_orientation_6_rotates_the_stored_pixels() -> None:
    source = samples.oriented_jpeg(6)
    assert Image.open(io.BytesIO(source)).size == (60, 90)

    data, width, height = to_jpeg(source, quality=90)

    assert (width, height) == (90, 60)
    # No orientation tag is left to rotate it a second time.
    assert decode(data).getexif().get(0x0112) is None


def test_png_exif_orientation_is_applied() -> None:
    im = decode(to_jpeg(samples.oriented_png(6), quality=90)[0])

    assert im.size == samples.UPRIGHT_SIZE
    assert close_to(rgb_at(im, 0.1, 0.1), samples.RED)


# --- metadata --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        samples.jpeg_with_icc_and_exif,
        samples.jpeg_full_exif,
        lambda: samples.jpeg_with_comment(b"shot by someone, at home"),
        samples.webp_with_exif,
        lambda: samples.oriented_png(3),
    ],
    ids=["icc-exif", "full-exif", "comment", "webp-exif", "png-exif"],
)
def test_no_metadata_in_output(source: Callable[[], bytes]) -> None:
    data, _, _ = to_jpeg(source(), quality=80)

    markers = jpeg_markers(data)
    app_segments = [m for m in markers if 0xE0 <= m <= 0xEF]
    assert app_segments in ([], [0xE0])  # at most the bare JFIF header
    assert 0xFE not in markers  # no comment
    for needle in (b"Exif", b"ICC_PROFILE", b"http://ns.adobe.com/xap", b"shot by", b"Canon"):
        assert needle not in data
    im = decode(data)
    assert not {"exif", "icc_profile", "comment", "xmp"} & set(im.info)
    assert len(im.getexif()) == 0


# --- size ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((400, 300), 100, (100, 75)),
        ((300, 400), 100, (75, 100)),
        ((400, 300), 400, (400, 300)),
        ((400, 300), 1000, (400, 300)),
        ((1000, 10), 100, (100, 1)),
    ],
)
def test_max_side(size: tuple[int, int], max_side: int, expected: tuple[int, int]) -> None:
    data, width, height = to_jpeg(photo_png(*size), quality=70, max_side=max_side)

    assert (width, height) == expected
    assert decode(data).size == expected


def test_max_side_on_a_large_jpeg_uses_the_reduced_decode_correctly() -> None:
    source = samples.encode_jpeg_cv2(samples.photo_like(1600, 1200))

    data, width, height = to_jpeg(source, quality=70, max_side=150)

    assert (width, height) == decode(data).size == (150, 113)


def test_max_side_counts_the_displayed_orientation() -> None:
    data, width, height = to_jpeg(samples.oriented_jpeg(6), quality=90, max_side=45)

    assert (width, height) == decode(data).size == (45, 30)


def test_no_max_side_keeps_the_full_size() -> None:
    source = samples.encode_jpeg_cv2(samples.photo_like(1200, 900))

    assert to_jpeg(source, quality=60)[1:] == (1200, 900)


def test_max_side_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_side"):
        to_jpeg(samples.png(), quality=50, max_side=0)


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        samples.svg(),
        samples.zip_archive(),
        b"\xff\xd8\xff\xe0" + b"\x00" * 20,
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 30,
    ],
    ids=["empty", "text", "svg", "zip", "jpeg-header-only", "png-header-only"],
)
def test_undecodable_data(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):
        to_jpeg(data, quality=50)
