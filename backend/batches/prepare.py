"""Everything a batch does to one fetched image's pixels, in one pass: validate the bytes as an
upload is validated, read their metadata, decode once at full size, then encode the
compressed output and the thumbnails from those same pixels.

Pure: bytes in, bytes out; meant to run in one worker thread (``run_pixels``) per image, so
an image costs one hop off the event loop rather than four.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.images.compress import jpeg_of_pixels
from backend.images.metadata import Metadata, extract
from backend.images.thumbnails import SIZES, render_pixels
from backend.images.validation import FORMAT_MIME, inspect, sniff_format
from backend.imaging.decode import decode


class Undecodable(Exception):
    """Bytes that passed validation but could not be decoded or encoded after all."""


@dataclass(frozen=True)
class Prepared:
    content_type: str
    meta: Metadata
    compressed: bytes
    thumbnails: dict[str, bytes]


def declared_type(data: bytes) -> str:
    """What the bytes say they are: a fetched image has no trustworthy declared type, so
    validation checks the rest of the file against its own magic bytes."""
    return FORMAT_MIME.get(sniff_format(data) or "", "application/octet-stream")


def prepare(data: bytes, *, quality: int, max_bytes: int, max_pixels: int) -> Prepared:
    """Raises ``ValidationFailure`` (with its ``upload.*`` code) for bytes an upload would be
    refused for, ``Undecodable`` when valid-looking bytes still fail to decode."""
    content_type = declared_type(data)
    inspect(data, declared_type=content_type, max_bytes=max_bytes, max_pixels=max_pixels)
    meta = extract(data)
    try:
        # Full size: the compressed output keeps every pixel, and the thumbnails shrink from it.
        pixels = decode(data, max_side=None, max_pixels=max_pixels)
        compressed = jpeg_of_pixels(pixels, quality=quality)
        thumbnails = render_pixels(pixels, (pixels.shape[1], pixels.shape[0]), SIZES)
    except ValueError as exc:
        raise Undecodable(str(exc)) from None
    return Prepared(content_type, meta, compressed, thumbnails)
