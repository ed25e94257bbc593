"""Where an image ends, by its container structure, and what a Multi-Picture JPEG claims.

Pure parsing, no decoding. ``layout`` returns the byte ranges the file accounts for; whatever
lies beyond them is data the image does not own (a zip, HTML, a second file).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from backend.imaging.header import Malformed, png_chunks

# Room left after the image's end marker; some encoders pad to a block boundary.
SLACK_BYTES = 16
# Ultra HDR writes two images, MPO stereo cameras two or three; more is not a photograph.
MAX_MPF_IMAGES = 8

# In JPEG entropy-coded data a real marker is 0xFF followed by anything but a stuffed zero,
# a restart marker (D0-D7) or another fill byte.
_JPEG_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_MP_ENTRY_TAG = 0xB002


@dataclass(frozen=True)
class Layout:
    end: int  # just past the last byte the image accounts for
    # (start, end) of each further JPEG a Multi-Picture index announces, in file order.
    secondary: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class _Jpeg:
    end: int
    mpf_base: int | None  # offset of the MP header (the TIFF header inside APP2 "MPF\0")
    mpf_end: int  # end of that APP2 segment
    has_frame: bool
    has_scan: bool


def layout(data: bytes, fmt: str) -> Layout:
    """The ranges ``data`` accounts for as ``fmt``; raises ``Malformed`` when they are lies."""
    if fmt == "jpeg":
        return _jpeg_layout(data)
    if fmt == "png":
        for ctype, _start, _stop, chunk_end in png_chunks(data):
            if ctype == b"IEND":
                return Layout(chunk_end)
        raise Malformed("no IEND chunk")
    if fmt == "gif":
        return Layout(_gif_end(data))
    return Layout(_webp_end(data))


def _jpeg_layout(data: bytes) -> Layout:
    first = _jpeg(data, 0)
    if first.mpf_base is None:
        return Layout(first.end)
    # Multi-Picture files (Ultra HDR gain maps, MPO stereo pairs) put further complete JPEGs
    # after the first; the index says where and how long, and every one must be just that.
    cursor = first.end
    secondary: list[tuple[int, int]] = []
    for start, size in sorted(_mp_entries(data, first.mpf_base, first.mpf_end)):
        if not cursor <= start <= cursor + SLACK_BYTES or start + size > len(data):
            raise Malformed("a Multi-Picture entry points outside the images")
        image = _jpeg(data, start)
        if not (image.has_frame and image.has_scan):
            raise Malformed("a Multi-Picture entry is not an image")
        if not start + size - SLACK_BYTES <= image.end <= start + size:
            raise Malformed("a Multi-Picture entry's size is not its image's")
        secondary.append((start, image.end))
        cursor = start + size
    return Layout(cursor, tuple(secondary))


def _mp_entries(data: bytes, base: int, limit: int) -> list[tuple[int, int]]:
    """(absolute start, size) of every image but the first in the MP Index IFD."""
    if data[base : base + 2] == b"II":
        order = "<"
    elif data[base : base + 2] == b"MM":
        order = ">"
    else:
        raise Malformed("bad Multi-Picture byte order")

    def read(fmt: str, offset: int) -> tuple[int, ...]:
        at = base + offset
        if offset < 0 or at + struct.calcsize(fmt) > limit:
            raise Malformed("Multi-Picture header runs past its segment")
        return struct.unpack_from(order + fmt, data, at)

    magic, ifd = read("HI", 2)
    if magic != 42:
        raise Malformed("bad Multi-Picture header")
    (count,) = read("H", ifd)
    for index in range(count):
        tag, typ, n, value = read("HHII", ifd + 2 + 12 * index)
        if tag != _MP_ENTRY_TAG:
            continue
        if typ != 7 or n % 16 or not 16 <= n <= 16 * MAX_MPF_IMAGES:
            raise Malformed("bad Multi-Picture entry list")
        entries = []
        for number in range(n // 16):
            _attr, size, offset, _dep1, _dep2 = read("IIIHH", value + 16 * number)
            if number == 0:
                if offset != 0:
                    raise Malformed("the first Multi-Picture entry is not this image")
                continue
            entries.append((base + offset, size))
        return entries
    raise Malformed("Multi-Picture segment without an entry list")


def _jpeg(data: bytes, start: int) -> _Jpeg:
    n = len(data)
    if not data.startswith(b"\xff\xd8", start):
        raise Malformed("not a JPEG start")
    pos = start + 2
    mpf_base: int | None = None
    mpf_end = 0
    has_frame = has_scan = False
    while True:
        if pos >= n or data[pos] != 0xFF:
            raise Malformed("expected a JPEG marker")
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            raise Malformed("truncated marker")
        marker = data[pos]
        if marker == 0xD9:
            return _Jpeg(pos + 1, mpf_base, mpf_end, has_frame, has_scan)
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 1
            continue
        if pos + 3 > n:
            raise Malformed("truncated segment length")
        length = int.from_bytes(data[pos + 1 : pos + 3], "big")
        seg_end = pos + 1 + length
        if length < 2 or seg_end > n:
            raise Malformed("segment runs past the end")
        if marker == 0xE2 and mpf_base is None and data.startswith(b"MPF\x00", pos + 3):
            mpf_base, mpf_end = pos + 7, seg_end
        has_frame = has_frame or marker in _SOF_MARKERS
        if marker == 0xDA:
            has_scan = True
            found = _JPEG_MARKER_IN_SCAN.search(data, seg_end)
            if found is None:
                raise Malformed("scan never ends")
            pos = found.start()
        else:
            pos = seg_end


def _gif_end(data: bytes) -> int:
    n = len(data)
    if n < 13:
        raise Malformed("truncated screen descriptor")
    packed = data[10]
    pos = 13 + (3 * (1 << ((packed & 7) + 1)) if packed & 0x80 else 0)

    def skip_sub_blocks(p: int) -> int:
        while True:
            if p >= n:
                raise Malformed("truncated data sub-block")
            size = data[p]
            p += 1
            if size == 0:
                return p
            p += size

    while True:
        if pos > n:
            raise Malformed("block runs past the end")
        if pos == n:
            # A missing trailer after complete blocks is common and harmless: nothing follows.
            return pos
        block = data[pos]
        if block == 0x3B:
            return pos + 1
        if block == 0x21:
            pos = skip_sub_blocks(pos + 2)
        elif block == 0x2C:
            if pos + 10 > n:
                raise Malformed("truncated image descriptor")
            local = data[pos + 9]
            pos += 10 + (3 * (1 << ((local & 7) + 1)) if local & 0x80 else 0)
            pos = skip_sub_blocks(pos + 1)  # +1: the LZW minimum code size
        else:
            raise Malformed("unknown GIF block")


def _webp_end(data: bytes) -> int:
    if len(data) < 12:
        raise Malformed("truncated RIFF header")
    size = int.from_bytes(data[4:8], "little")
    end = 8 + size + (size & 1)
    if end > len(data):
        raise Malformed("RIFF size runs past the end")
    return end
