"""Real photographs for tests and benchmarks, at the sizes users upload.

The files in ``tests/data`` are real photographs (see its README). Phone-camera sizes (12 MP and
more) are made from ``two-wings.jpg`` (2560×1600, a real macro photograph) by a Lanczos upscale
and a JPEG re-encode at quality 90, so they keep real photographic structure (noise, bokeh, fine
detail) rather than synthetic patterns; results are cached per size for the session.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import cv2

DATA = Path(__file__).resolve().parent / "data"
PORTRAIT = DATA / "astronaut.jpg"  # a face, for smart crops and portrait styles
DARK_SCENE = DATA / "coffee.jpg"  # dark flat background
PHOTO = DATA / "two-wings.jpg"  # 2560×1600 macro photograph


@functools.cache
def photo_jpeg(megapixels: float = 12.0, *, quality: int = 90) -> bytes:
    """A JPEG of about ``megapixels`` MP, made from the real photograph ``PHOTO``."""
    image = cv2.imread(str(PHOTO), cv2.IMREAD_COLOR)
    assert image is not None, PHOTO
    height, width = image.shape[:2]
    scale = math.sqrt(megapixels * 1e6 / (width * height))
    size = (round(width * scale), round(height * scale))
    interpolation = cv2.INTER_LANCZOS4 if scale > 1 else cv2.INTER_AREA
    resized = cv2.resize(image, size, interpolation=interpolation)
    ok, buf = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()
