"""Encoding delivered pixels: JPEG, PNG, WebP or AVIF, with no metadata but an sRGB profile.

Pure: a BGR, BGRA or gray ``uint8`` array in (already upright: orientation is applied by the
decoder, so no EXIF orientation tag is needed or written), bytes out. Pillow encodes every
format here: its wheels carry libjpeg-turbo, libwebp and (since Pillow 11.3) libavif, and it
attaches an ICC profile in all four, which OpenCV's ``imencode`` cannot. Measured against
pyvips' ``webpsave`` on the same pixels, Pillow's WebP took the same time (same libwebp).
"""

from __future__ import annotations

import io
from functools import cache
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageCms, features

OutputFormat = Literal["jpeg", "png", "webp", "avif"]

CONTENT_TYPES: dict[str, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "avif": "image/avif",
}
EXTENSIONS: dict[str, str] = {"jpeg": "jpg", "png": "png", "webp": "webp", "avif": "avif"}
# Formats that keep an alpha channel; JPEG output is flattened onto white.
ALPHA_FORMATS = frozenset({"png", "webp", "avif"})
# libavif's speed 0..10: 8 is a fraction of the default's time for files a few % larger.
AVIF_SPEED = 8


@cache
def avif_available() -> bool:
    return bool(features.check("avif"))


@cache
def srgb_profile() -> bytes:
    """A compact sRGB ICC profile (under 600 bytes), built by LittleCMS once per process."""
    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


def _to_pil(pixels: npt.NDArray[np.uint8], *, keep_alpha: bool) -> Image.Image:
    if pixels.ndim == 2:
        return Image.fromarray(pixels, "L").convert("RGB")
    if pixels.shape[2] == 4:
        rgba = Image.fromarray(cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA), "RGBA")
        if keep_alpha:
            return rgba
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return Image.fromarray(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB), "RGB")


def encode(pixels: npt.NDArray[np.uint8], fmt: OutputFormat, quality: int) -> bytes:
    """Encoded bytes; ``quality`` 1..100 (PNG is lossless and ignores it)."""
    if fmt not in CONTENT_TYPES:
        raise ValueError(f"unsupported output format {fmt!r}")
    if not 1 <= quality <= 100:
        raise ValueError("quality must be between 1 and 100")
    if fmt == "avif" and not avif_available():
        raise ValueError("this Pillow build has no AVIF encoder")
    image = _to_pil(pixels, keep_alpha=fmt in ALPHA_FORMATS)
    # Only the keys below are written: no EXIF, GPS, XMP or comments leave with the pixels.
    options: dict[str, Any] = {"icc_profile": srgb_profile()}
    if fmt == "jpeg":
        options.update(quality=quality, progressive=image.width * image.height > 10_000)
    elif fmt == "webp":
        options.update(quality=quality, method=4)
    elif fmt == "avif":
        options.update(quality=quality, speed=AVIF_SPEED)
    else:
        options.update(compress_level=6)
    out = io.BytesIO()
    image.save(out, fmt.upper(), **options)
    return out.getvalue()
