"""Images on their way to a remote provider: upright, bounded in size, without metadata.

Images never leave at full size: they are decoded, turned upright, shrunk to ``max_side`` and
re-encoded (JPEG, or PNG when there is real transparency), which also drops EXIF and GPS
metadata before the bytes go to a third party.
"""

from __future__ import annotations

from backend.ai.providers.base import BAD_IMAGE, ProviderError
from backend.imaging.decode import DEFAULT_MAX_PIXELS, decode
from backend.sketches.styles import encode

_JPEG_QUALITY = 90


def prepare_image(
    data: bytes, max_side: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[bytes, str]:
    """(encoded bytes, MIME type) of ``data`` upright, at most ``max_side`` on the long side.

    JPEG unless the image has pixels that are not fully opaque, then PNG. Metadata is dropped.
    Raises ValueError on data that is not a decodable JPEG, PNG, WebP or GIF image.
    """
    pixels = decode(data, max_side=max_side, max_pixels=max_pixels, alpha=True)
    # A PNG saved with an alpha channel that is opaque everywhere is sent as a smaller JPEG.
    if pixels.shape[2] == 4 and int(pixels[:, :, 3].min()) < 255:
        return encode(pixels, "png"), "image/png"
    return encode(pixels[:, :, :3], "jpeg", quality=_JPEG_QUALITY), "image/jpeg"


def prepared(data: bytes, max_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[bytes, str]:
    """``prepare_image``, with an unreadable image as the final ``ai.bad_image``."""
    try:
        return prepare_image(data, max_side, max_pixels)
    except (ValueError, OSError) as exc:
        raise ProviderError(f"The image cannot be read: {exc}", code=BAD_IMAGE) from exc
