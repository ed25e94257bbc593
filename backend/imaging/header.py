"""What an image's first bytes and header say, read without decoding any pixel.

Format sniffing, container walks (PNG chunks, the WebP canvas), Pillow's lazy header parse and
the EXIF orientation. Pure and cheap: nothing here allocates in proportion to the pixel count.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from typing import Any

from PIL import (
    GifImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    WebPImagePlugin,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ORIENTATION_TAG = 0x0112

_OPENERS: dict[str, type[ImageFile.ImageFile]] = {
    "jpeg": JpegImagePlugin.JpegImageFile,
    "png": PngImagePlugin.PngImageFile,
    "gif": GifImagePlugin.GifImageFile,
    "webp": WebPImagePlugin.WebPImageFile,
}


class Malformed(Exception):
    """The container structure cannot be followed to its end."""


def sniff_format(data: bytes) -> str | None:
    """The allowed format the leading bytes announce, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def webp_canvas_size(data: bytes) -> tuple[int, int] | None:
    """Canvas size from the first chunk header of a WebP file, or None when unreadable."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return (
            int.from_bytes(data[24:27], "little") + 1,
            int.from_bytes(data[27:30], "little") + 1,
        )
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack_from("<HH", data, 26)
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def open_header(data: bytes, fmt: str) -> ImageFile.ImageFile:
    """Parse only the header of ``data`` as ``fmt``; no pixel data is decoded.

    The plugin class is used directly instead of ``Image.open`` so that Pillow's global
    MAX_IMAGE_PIXELS check (a warning, then an error at twice the limit) does not pre-empt
    the caller's own, equal or tighter, limit (``decode.probe`` applies it before any decode).
    Raises whatever the plugin raises on a broken header.
    """
    return _OPENERS[fmt](io.BytesIO(data))


def png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, data start, data end, chunk end) for each chunk up to and including IEND."""
    pos = len(PNG_SIGNATURE)
    n = len(data)
    while pos < n:
        if pos + 8 > n:
            raise Malformed("truncated chunk header")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        chunk_end = pos + 12 + length
        if length > 0x7FFFFFFF or chunk_end > n:
            raise Malformed("chunk runs past the end")
        yield ctype, pos + 8, pos + 8 + length, chunk_end
        if ctype == b"IEND":
            return
        pos = chunk_end


def read_exif(data: bytes, fmt: str, im: Image.Image) -> Image.Exif | None:
    """The parsed EXIF block, or None when there is none or it cannot be parsed at all."""
    raw: bytes | None = None
    if fmt == "png":
        # Pillow's PNG getexif() decodes every pixel to look for eXIf after the image data;
        # walking the chunk list finds it without decoding.
        try:
            for ctype, start, stop, _ in png_chunks(data):
                if ctype == b"eXIf":
                    raw = data[start:stop]
                    break
        except Exception:
            raw = None
    else:
        value = im.info.get("exif")
        raw = value if isinstance(value, bytes) else None
    if not raw:
        return None
    exif = Image.Exif()
    try:
        exif.load(raw)
    except Exception:
        return None
    return exif if len(exif) else None


def orientation_of(exif: Image.Exif | None) -> int:
    """EXIF orientation 1-8; anything missing or out of range means upright (1)."""
    if exif is None:
        return 1
    try:
        value = first_value(exif.get(ORIENTATION_TAG))
        orientation = int(value) if value is not None else 1
    except Exception:
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def first_value(value: Any) -> Any:
    # Single values sometimes arrive as one-element tuples, depending on the writer.
    if isinstance(value, tuple | list):
        return value[0] if value else None
    return value


def has_alpha(im: Image.Image) -> bool:
    """Whether the header announces any transparency (an alpha channel or a tRNS key)."""
    return im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
