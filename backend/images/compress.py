"""Compressed JPEG copies of images: upright, flattened, metadata-free.

Pure: bytes in, an encoded JPEG and its size out. Decoding is shared with the thumbnails
(``decode_oriented``), so orientation, alpha, palette and 16-bit handling are the same
everywhere an image is re-encoded. Callers validate the bytes first (``validation.inspect``):
that is where pixel-count limits are enforced, not here.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np

from backend.images.thumbnails import Pixels, decode_oriented, thumbnail_size

MIN_QUALITY = 1
# Above 95 libjpeg's output grows steeply for no visible gain; not a useful "compression".
MAX_QUALITY = 95


def to_jpeg(data: bytes, *, quality: int, max_side: int | None = None) -> tuple[bytes, int, int]:
    """``data`` re-encoded as a baseline JPEG at ``quality``, at most ``max_side`` on its longer
    edge (never enlarged); returns (jpeg bytes, width, height). ValueError on undecodable data.
    """
    if not MIN_QUALITY <= quality <= MAX_QUALITY:
        raise ValueError(f"quality must be between {MIN_QUALITY} and {MAX_QUALITY}")
    if max_side is not None and max_side <= 0:
        raise ValueError("max_side must be positive")

    # Without a bound the decode must be full size: a "largest" no image reaches turns the
    # reduced-scale JPEG decode and Pillow's whole-factor reduce off.
    pixels, (width, height) = decode_oriented(data, max_side or sys.maxsize)
    target = thumbnail_size(width, height, max_side) if max_side else (width, height)
    if (pixels.shape[1], pixels.shape[0]) != target:
        # decode_oriented returns the full displayed size when not reducing, so this only runs
        # to shrink: INTER_AREA is the right filter for that.
        pixels = np.asarray(cv2.resize(pixels, target, interpolation=cv2.INTER_AREA), np.uint8)
    return _encode_jpeg(pixels, quality), target[0], target[1]


def _encode_jpeg(pixels: Pixels, quality: int) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1]
    # OpenCV encodes bare pixels (a JFIF header and nothing else): no EXIF, GPS, ICC, XMP or
    # comments can carry over from the source.
    ok, buffer = cv2.imencode(".jpg", pixels, params)
    if not ok:
        raise ValueError("could not encode the JPEG")
    return bytes(buffer.tobytes())
