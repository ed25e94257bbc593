"""Thumbnails: decode once at a reduced scale, orient, shrink, encode without metadata.

Pure: bytes in, encoded thumbnails out. JPEG goes through OpenCV's reduced decode (libjpeg
scales during the IDCT, which measured faster than Pillow's ``draft`` and pyvips here); the
other formats are decoded by Pillow, whose mode handling covers palettes, alpha and 16 bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from backend.images.metadata import orientation_of, read_exif
from backend.images.validation import open_header, sniff_format

SIZES: dict[str, int] = {"small": 200, "medium": 800}

Pixels = npt.NDArray[np.uint8]

_FORMATS = {"jpeg": ".jpg", "webp": ".webp"}
_REDUCED_JPEG_FLAGS = (
    (8, cv2.IMREAD_REDUCED_COLOR_8),
    (4, cv2.IMREAD_REDUCED_COLOR_4),
    (2, cv2.IMREAD_REDUCED_COLOR_2),
)


def thumbnail_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Size that fits ``long_side`` on the longer edge, keeping the aspect; never larger."""
    if width <= 0 or height <= 0 or long_side <= 0:
        raise ValueError("width, height and long_side must be positive")
    longest = max(width, height)
    if longest <= long_side:
        return width, height

    def scaled(side: int) -> int:
        # Integer round-half-up, so a 3:2 photo gives the same short side on every platform.
        return max(1, (2 * side * long_side + longest) // (2 * longest))

    if width >= height:
        return long_side, scaled(height)
    return scaled(width), long_side


def render_thumbnails(
    data: bytes,
    sizes: Mapping[str, int] = SIZES,
    *,
    fmt: str = "jpeg",
    quality: int = 85,
) -> dict[str, bytes]:
    """Encoded thumbnails keyed like ``sizes``. Raises ValueError on undecodable data."""
    if fmt not in _FORMATS:
        raise ValueError(f"unsupported thumbnail format {fmt!r}")
    if not 1 <= quality <= 100:
        raise ValueError("quality must be between 1 and 100")
    if not sizes or any(side <= 0 for side in sizes.values()):
        raise ValueError("sizes must be positive long-side lengths")

    pixels, (width, height) = decode_oriented(data, max(sizes.values()))

    rendered: dict[str, bytes] = {}
    current = pixels
    # Largest first: each smaller size is shrunk from the previous one, which is cheaper than
    # starting from the decode again and, with INTER_AREA, visually the same.
    for name, long_side in sorted(sizes.items(), key=lambda item: item[1], reverse=True):
        target = thumbnail_size(width, height, long_side)
        if (current.shape[1], current.shape[0]) != target:
            resized = cv2.resize(current, target, interpolation=cv2.INTER_AREA)
            current = np.asarray(resized, dtype=np.uint8)
        rendered[name] = _encode(current, fmt, quality)
    return {name: rendered[name] for name in sizes}


def decode_oriented(data: bytes, largest: int) -> tuple[Pixels, tuple[int, int]]:
    """BGR pixels, upright, at least ``largest`` on the long side when the image is that big;
    and the full displayed size, which thumbnail sizes are computed from."""
    fmt = sniff_format(data)
    if fmt is None:
        raise ValueError("not a JPEG, PNG, WebP or GIF image")
    try:
        im = open_header(data, fmt)
    except Exception as exc:
        raise ValueError(f"unreadable image header: {exc}") from None
    with im:
        width, height = im.size
        orientation = orientation_of(read_exif(data, fmt, im))
        if fmt == "jpeg":
            pixels = _decode_jpeg(data, width, height, largest)
        else:
            try:
                im.load()
                pixels = _to_bgr(im, largest)
            except Exception as exc:
                raise ValueError(f"undecodable image: {exc}") from None
    if orientation >= 5:
        width, height = height, width
    return _orient(pixels, orientation), (width, height)


def _decode_jpeg(data: bytes, width: int, height: int, largest: int) -> Pixels:
    flags = cv2.IMREAD_COLOR
    for denominator, reduced in _REDUCED_JPEG_FLAGS:
        # libjpeg rounds reduced sizes up; requiring the exact quotient keeps every target
        # dimension within the decoded image, so resizing only ever shrinks.
        if max(width, height) >= largest * denominator:
            flags = reduced
            break
    # Orientation is applied by us from the same EXIF reading that metadata reports, so the
    # thumbnail and the stored width/height can never disagree.
    flags |= cv2.IMREAD_IGNORE_ORIENTATION
    try:
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as exc:
        raise ValueError(f"undecodable JPEG: {exc}") from None
    if decoded is None:
        raise ValueError("undecodable JPEG")
    return np.ascontiguousarray(decoded, dtype=np.uint8)


def _to_bgr(im: Image.Image, largest: int) -> Pixels:
    """8-bit BGR from any Pillow mode, shrunk by a whole factor first when much too large.

    The work stays in Pillow's C code until the image is small: a 50 MP RGBA PNG would need
    several full-size numpy temporaries otherwise.
    """
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # High bit depth grayscale: keep the top 8 bits rather than clipping at 255.
        wide: npt.NDArray[Any] = np.asarray(im)
        top = wide if mode == "F" else wide >> 8
        im = Image.fromarray(np.clip(top, 0, 255).astype(np.uint8), "L")
        mode = "L"

    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info):
        rgba = im if mode == "RGBA" else im.convert("RGBA")
        rgb = Image.new("RGB", rgba.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba.getchannel("A"))
    elif mode != "RGB":
        rgb = im.convert("RGB")
    else:
        rgb = im

    factor = max(rgb.size) // largest
    if factor >= 2:
        # A box reduce by a whole factor is what INTER_AREA does too; the exact size comes
        # later, and the quotient rule keeps the result at least ``largest`` on its long side.
        rgb = rgb.reduce(factor)
    pixels = np.asarray(rgb, dtype=np.uint8)
    return np.ascontiguousarray(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), dtype=np.uint8)


def _orient(pixels: Pixels, orientation: int) -> Pixels:
    """Turn stored pixels into displayed pixels per the EXIF orientation tag."""
    if orientation == 2:
        out = cv2.flip(pixels, 1)
    elif orientation == 3:
        out = cv2.rotate(pixels, cv2.ROTATE_180)
    elif orientation == 4:
        out = cv2.flip(pixels, 0)
    elif orientation == 5:
        out = cv2.transpose(pixels)
    elif orientation == 6:
        out = cv2.rotate(pixels, cv2.ROTATE_90_CLOCKWISE)
    elif orientation == 7:
        out = cv2.rotate(cv2.transpose(pixels), cv2.ROTATE_180)
    elif orientation == 8:
        out = cv2.rotate(pixels, cv2.ROTATE_90_COUNTERCLOCKWISE)
    else:
        return pixels
    return np.ascontiguousarray(out, dtype=np.uint8)


def _encode(pixels: Pixels, fmt: str, quality: int) -> bytes:
    if fmt == "webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    else:
        params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1]
    # imencode writes bare pixels: no EXIF, GPS, ICC or XMP leaves with a thumbnail.
    ok, buffer = cv2.imencode(_FORMATS[fmt], pixels, params)
    if not ok:
        raise ValueError(f"could not encode a {fmt} thumbnail")
    return bytes(buffer.tobytes())
