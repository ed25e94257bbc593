"""Images on their way to a remote provider: upright, bounded in size, without metadata.

Images never leave at full size: they are decoded, turned upright, shrunk to ``max_side`` and
re-encoded (JPEG, or PNG when there is real transparency), which also drops EXIF and GPS
metadata before the bytes go to a third party.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps

from backend.ai.providers.base import BAD_IMAGE, ProviderError
from backend.images.thumbnails import thumbnail_size
from backend.images.validation import open_header, sniff_format
from backend.sketches.styles import encode, load

_JPEG_QUALITY = 90


def prepare_image(data: bytes, max_side: int) -> tuple[bytes, str]:
    """(encoded bytes, MIME type) of ``data`` upright, at most ``max_side`` on the long side.

    JPEG unless the image has pixels that are not fully opaque, then PNG. Metadata is dropped.
    Raises ValueError on data that is not a decodable JPEG, PNG, WebP or GIF image.
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise ValueError("not a JPEG, PNG, WebP or GIF image")
    if fmt != "jpeg":
        with open_header(data, fmt) as im:
            if _has_transparency(im):
                return _transparent_png(im, max_side), "image/png"
    pixels = load(data, max_side=max_side)
    return encode(pixels, "jpeg", quality=_JPEG_QUALITY), "image/jpeg"


def prepared(data: bytes, max_side: int) -> tuple[bytes, str]:
    try:
        return prepare_image(data, max_side)
    except (ValueError, OSError) as exc:
        raise ProviderError(f"The image cannot be read: {exc}", code=BAD_IMAGE) from exc


def _has_transparency(im: Image.Image) -> bool:
    if im.mode not in ("RGBA", "LA", "PA", "La", "RGBa") and not (
        im.mode == "P" and "transparency" in im.info
    ):
        return False
    lowest, _ = im.convert("RGBA").getchannel("A").getextrema()
    # A PNG saved with an alpha channel that is opaque everywhere is sent as a smaller JPEG.
    return isinstance(lowest, int | float) and lowest < 255


def _transparent_png(im: Image.Image, max_side: int) -> bytes:
    upright = ImageOps.exif_transpose(im.convert("RGBA"))
    target = thumbnail_size(upright.width, upright.height, max_side)
    if target != upright.size:
        upright = upright.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    # Pillow writes some of ``info`` (ICC, text chunks) back out; the JPEG path sends none.
    upright.info.clear()
    out = io.BytesIO()
    upright.save(out, "PNG")
    return out.getvalue()
