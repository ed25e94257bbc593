"""Compressed JPEG copies of images: upright, flattened, metadata-free.

Pure: bytes in, an encoded JPEG and its size out. Decoding goes through
``backend.imaging.decode`` like every other feature, so orientation, alpha, palette and 16-bit
handling are the same everywhere an image is re-encoded, and the pixel budget is checked on the
header before any decode.
"""

from __future__ import annotations

import cv2

from backend.imaging.decode import DEFAULT_MAX_PIXELS, Pixels, decode

MIN_QUALITY = 1
# Above 95 libjpeg's output grows steeply for no visible gain; not a useful "compression".
MAX_QUALITY = 95


def to_jpeg(
    data: bytes,
    *,
    quality: int,
    max_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[bytes, int, int]:
    """``data`` re-encoded as a baseline JPEG at ``quality``, at most ``max_side`` on its longer
    edge (never enlarged); returns (jpeg bytes, width, height). ValueError on undecodable data.
    """
    if not MIN_QUALITY <= quality <= MAX_QUALITY:
        raise ValueError(f"quality must be between {MIN_QUALITY} and {MAX_QUALITY}")
    if max_side is not None and max_side <= 0:
        raise ValueError("max_side must be positive")

    pixels = decode(data, max_side=max_side, max_pixels=max_pixels)
    height, width = pixels.shape[:2]
    return _encode_jpeg(pixels, quality), width, height


def jpeg_of_pixels(pixels: Pixels, *, quality: int) -> bytes:
    """``to_jpeg``'s encoding of pixels the caller already decoded (upright, BGR)."""
    if not MIN_QUALITY <= quality <= MAX_QUALITY:
        raise ValueError(f"quality must be between {MIN_QUALITY} and {MAX_QUALITY}")
    return _encode_jpeg(pixels, quality)


def _encode_jpeg(pixels: Pixels, quality: int) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1]
    # OpenCV encodes bare pixels (a JFIF header and nothing else): no EXIF, GPS, ICC, XMP or
    # comments can carry over from the source.
    ok, buffer = cv2.imencode(".jpg", pixels, params)
    if not ok:
        raise ValueError("could not encode the JPEG")
    return bytes(buffer.tobytes())
