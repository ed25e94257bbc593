"""Thumbnails: decode once at a reduced scale, orient, shrink, encode without metadata.

Pure: bytes in, encoded thumbnails out. Decoding goes through ``backend.imaging.decode``
(header check first, shrink-on-load, bounded memory for PNG and GIF).
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from backend.imaging.decode import DEFAULT_MAX_PIXELS, Pixels, decode_probed, fit_size, probe

SIZES: dict[str, int] = {"small": 200, "medium": 800}

_FORMATS = {"jpeg": ".jpg", "webp": ".webp"}


def thumbnail_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Size that fits ``long_side`` on the longer edge, keeping the aspect; never larger."""
    return fit_size(width, height, long_side)


def render_thumbnails(
    data: bytes,
    sizes: Mapping[str, int] = SIZES,
    *,
    fmt: str = "jpeg",
    quality: int = 85,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> dict[str, bytes]:
    """Encoded thumbnails keyed like ``sizes``. Raises ValueError on undecodable data."""
    _check(sizes, fmt, quality)
    pixels, size = decode_oriented(data, max(sizes.values()), max_pixels=max_pixels)
    return render_pixels(pixels, size, sizes, fmt=fmt, quality=quality)


def render_pixels(
    pixels: Pixels,
    size: tuple[int, int],
    sizes: Mapping[str, int] = SIZES,
    *,
    fmt: str = "jpeg",
    quality: int = 85,
) -> dict[str, bytes]:
    """``render_thumbnails`` of pixels already decoded (upright, BGR) at any size at least as
    large as the largest thumbnail; ``size`` is the image's full displayed size, which every
    thumbnail size is computed from. For a caller that decoded the image for its own work."""
    _check(sizes, fmt, quality)
    width, height = size
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


def _check(sizes: Mapping[str, int], fmt: str, quality: int) -> None:
    if fmt not in _FORMATS:
        raise ValueError(f"unsupported thumbnail format {fmt!r}")
    if not 1 <= quality <= 100:
        raise ValueError("quality must be between 1 and 100")
    if not sizes or any(side <= 0 for side in sizes.values()):
        raise ValueError("sizes must be positive long-side lengths")


def decode_oriented(
    data: bytes, largest: int, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[Pixels, tuple[int, int]]:
    """BGR pixels, upright, ``largest`` on the long side (or the whole image when smaller);
    and the full displayed size, which every thumbnail size is computed from."""
    header = probe(data, max_pixels=max_pixels)
    pixels = decode_probed(data, header, max_side=largest)
    return pixels, (header.width, header.height)


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
