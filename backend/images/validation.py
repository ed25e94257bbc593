"""Upload validation: the declared name/type/size, then the bytes themselves.

Pure: bytes and strings in, a result or a ``ValidationFailure`` out. Every check has its own
stable ``code`` so the API can report precisely why a file was refused.
"""

from __future__ import annotations

import io
import re
import struct
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import (
    GifImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    WebPImagePlugin,
)

ALLOWED_TYPES: dict[str, tuple[str, ...]] = {
    "image/jpeg": (".jpg", ".jpeg"),
    "image/png": (".png",),
    "image/webp": (".webp",),
    "image/gif": (".gif",),
}

FORMAT_MIME: dict[str, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
}

MAX_FILENAME_CHARS = 150
# Room left after the image's end marker; some encoders pad to a block boundary.
TRAILING_SLACK_BYTES = 16

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,10})$")
# Characters that break Content-Disposition headers or Windows file systems.
_UNSAFE_CHARS = re.compile(r'[<>:"|?*]')
# In JPEG entropy-coded data a real marker is 0xFF followed by anything but a stuffed zero,
# a restart marker (D0-D7) or another fill byte.
_JPEG_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")

# Pillow's own limit can still fire (a GIF frame larger than its screen grows the canvas);
# the warning is an exception only under a warnings filter, but then it must not escape.
_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)

_OPENERS: dict[str, type[ImageFile.ImageFile]] = {
    "jpeg": JpegImagePlugin.JpegImageFile,
    "png": PngImagePlugin.PngImageFile,
    "gif": GifImagePlugin.GifImageFile,
    "webp": WebPImagePlugin.WebPImageFile,
}


class ValidationFailure(Exception):
    """A refused upload; ``code`` is stable and machine-readable, ``message`` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ValidationFailure({self.code!r}, {self.message!r})"


@dataclass(frozen=True)
class ImageInfo:
    format: str
    mime: str
    width: int
    height: int
    frames: int


class _Malformed(Exception):
    """The container structure cannot be followed to its end."""


# --- names and declared types ---------------------------------------------------------------


def sanitize_filename(name: str) -> str:
    """A display-safe file name: no directories, control characters or hidden-file dots."""
    name = unicodedata.normalize("NFC", name)
    # Cc covers NUL and other control characters; Cf covers invisible ones such as the
    # right-to-left override that makes "gpj.exe" look like "exe.jpg"; Cs (lone surrogates
    # from JSON escapes) cannot be encoded as UTF-8 and would fail in the database.
    name = "".join(" " if ch in "\t\n\r" else ch for ch in name)
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE_CHARS.sub("_", name)
    name = re.sub(r"\s+", " ", name)
    name = re.sub(r"\.{2,}", ".", name).strip()

    # The extension is taken before leading dots go, so ".jpg" becomes "upload.jpg".
    match = _EXTENSION.search(name)
    if match:
        ext = "." + match.group(1).lower()
        stem = name[: match.start()]
    else:
        ext, stem = "", name
    stem = stem.strip(" .")
    if not stem and not ext:
        raise ValidationFailure("upload.bad_filename", "The file name is missing or unusable.")
    if not stem:
        stem = "upload"
    stem = stem[: MAX_FILENAME_CHARS - len(ext)].rstrip(" .") or "upload"
    return stem + ext


def _normalize_mime(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def check_declared(filename: str, content_type: str, size_bytes: int, *, max_bytes: int) -> str:
    """Checks on what the client says it will send; returns the sanitized file name."""
    _check_size(size_bytes, max_bytes)
    safe_name = sanitize_filename(filename)
    mime = _normalize_mime(content_type)
    ext_match = _EXTENSION.search(safe_name)
    ext = "." + ext_match.group(1).lower() if ext_match else ""
    allowed_exts = {e for exts in ALLOWED_TYPES.values() for e in exts}
    if mime not in ALLOWED_TYPES or ext not in allowed_exts:
        raise ValidationFailure(
            "upload.unsupported_type", "Only JPEG, PNG, WebP and GIF images can be uploaded."
        )
    if ext not in ALLOWED_TYPES[mime]:
        raise ValidationFailure(
            "upload.type_mismatch",
            f"The file name ends in {ext} but the file was declared as {mime}.",
        )
    return safe_name


def _check_size(size_bytes: int, max_bytes: int) -> None:
    if size_bytes <= 0:
        raise ValidationFailure("upload.empty", "The file is empty.")
    if size_bytes > max_bytes:
        raise ValidationFailure(
            "upload.too_large", f"The file is larger than the {max_bytes} bytes allowed."
        )


# --- bytes -----------------------------------------------------------------------------------


def sniff_format(data: bytes) -> str | None:
    """The allowed format the leading bytes announce, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(_PNG_SIGNATURE):
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
    the caller's own limit. Raises whatever the plugin raises on a broken header.
    """
    return _OPENERS[fmt](io.BytesIO(data))


def inspect(data: bytes, *, declared_type: str, max_bytes: int, max_pixels: int) -> ImageInfo:
    """Checks on the actual bytes, cheapest and least allocating first."""
    _check_size(len(data), max_bytes)

    fmt = sniff_format(data)
    if fmt is None:
        raise ValidationFailure(
            "upload.unrecognized", "The file is not a JPEG, PNG, WebP or GIF image."
        )
    mime = FORMAT_MIME[fmt]
    declared = _normalize_mime(declared_type)
    if declared != mime:
        raise ValidationFailure(
            "upload.magic_mismatch",
            f"The file was declared as {declared[:80] or 'nothing'} but its content is {mime}.",
        )

    # libwebp allocates the whole canvas while parsing the header, so its size is read by hand
    # before Pillow sees the file.
    if fmt == "webp" and (size := webp_canvas_size(data)) is not None:
        _check_pixels(size[0], size[1], max_pixels)

    try:
        im = open_header(data, fmt)
    except _BOMB:
        raise _too_many_pixels(max_pixels) from None
    except Exception:
        raise _corrupt() from None

    with im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise _corrupt()
        _check_pixels(width, height, max_pixels)

        try:
            frames = int(getattr(im, "n_frames", 1)) if fmt != "gif" else _gif_frames(im)
        except Exception:
            raise _corrupt() from None
        if frames > 1:
            raise ValidationFailure(
                "upload.animated_unsupported", "Animated images are not supported."
            )

        try:
            if fmt == "jpeg":
                # Reduced-scale IDCT still entropy-decodes every byte of every scan, so it
                # finds the same truncation and corruption at a fraction of the memory.
                im.draft(None, (1, 1))
            im.load()
        except _BOMB:
            raise _too_many_pixels(max_pixels) from None
        except Exception:
            raise _corrupt() from None

    # Independent of Pillow: also catches truncation if someone enabled LOAD_TRUNCATED_IMAGES.
    try:
        end = _image_end(data, fmt)
    except Exception:
        raise _corrupt() from None
    if len(data) - end > TRAILING_SLACK_BYTES:
        raise ValidationFailure(
            "upload.trailing_data",
            "The file carries extra data after the end of the image.",
        )
    return ImageInfo(format=fmt, mime=mime, width=width, height=height, frames=frames)


def _gif_frames(im: ImageFile.ImageFile) -> int:
    # Only whether there is a second frame matters, and asking that skips one frame's data
    # instead of walking the whole animation as n_frames would.
    return 2 if bool(getattr(im, "is_animated", False)) else 1


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise _too_many_pixels(max_pixels)


def _too_many_pixels(max_pixels: int) -> ValidationFailure:
    return ValidationFailure(
        "upload.too_many_pixels",
        f"The image has more than the {max_pixels} pixels allowed.",
    )


def _corrupt() -> ValidationFailure:
    return ValidationFailure("upload.corrupt", "The image is damaged or incomplete.")


# --- where the image ends --------------------------------------------------------------------


def _image_end(data: bytes, fmt: str) -> int:
    """Offset just past the image's last byte according to its container structure."""
    if fmt == "jpeg":
        return _jpeg_end_with_mpf(data)
    if fmt == "png":
        end = 0
        for ctype, _start, _stop, chunk_end in png_chunks(data):
            end = chunk_end
            if ctype == b"IEND":
                return end
        raise _Malformed("no IEND chunk")
    if fmt == "gif":
        return _gif_end(data)
    return _webp_end(data)


def _jpeg_end_with_mpf(data: bytes) -> int:
    end, has_mpf = _jpeg_end(data, 0)
    # Multi-Picture files (Ultra HDR gain maps, MPO stereo pairs) legitimately put further
    # complete JPEGs after the first one; anything else there is still refused.
    if has_mpf:
        while data.startswith(b"\xff\xd8\xff", end):
            end, _ = _jpeg_end(data, end)
    return end


def _jpeg_end(data: bytes, start: int) -> tuple[int, bool]:
    n = len(data)
    pos = start + 2
    has_mpf = False
    while True:
        if pos >= n or data[pos] != 0xFF:
            raise _Malformed("expected a JPEG marker")
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            raise _Malformed("truncated marker")
        marker = data[pos]
        if marker == 0xD9:
            return pos + 1, has_mpf
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 1
            continue
        if pos + 3 > n:
            raise _Malformed("truncated segment length")
        length = int.from_bytes(data[pos + 1 : pos + 3], "big")
        seg_end = pos + 1 + length
        if length < 2 or seg_end > n:
            raise _Malformed("segment runs past the end")
        if marker == 0xE2 and data.startswith(b"MPF\x00", pos + 3):
            has_mpf = True
        if marker == 0xDA:
            found = _JPEG_MARKER_IN_SCAN.search(data, seg_end)
            if found is None:
                raise _Malformed("scan never ends")
            pos = found.start()
        else:
            pos = seg_end


def png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, data start, data end, chunk end) for each chunk up to and including IEND."""
    pos = len(_PNG_SIGNATURE)
    n = len(data)
    while pos < n:
        if pos + 8 > n:
            raise _Malformed("truncated chunk header")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        chunk_end = pos + 12 + length
        if length > 0x7FFFFFFF or chunk_end > n:
            raise _Malformed("chunk runs past the end")
        yield ctype, pos + 8, pos + 8 + length, chunk_end
        if ctype == b"IEND":
            return
        pos = chunk_end


def _gif_end(data: bytes) -> int:
    n = len(data)
    if n < 13:
        raise _Malformed("truncated screen descriptor")
    packed = data[10]
    pos = 13 + (3 * (1 << ((packed & 7) + 1)) if packed & 0x80 else 0)

    def skip_sub_blocks(p: int) -> int:
        while True:
            if p >= n:
                raise _Malformed("truncated data sub-block")
            size = data[p]
            p += 1
            if size == 0:
                return p
            p += size

    while True:
        if pos > n:
            raise _Malformed("block runs past the end")
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
                raise _Malformed("truncated image descriptor")
            local = data[pos + 9]
            pos += 10 + (3 * (1 << ((local & 7) + 1)) if local & 0x80 else 0)
            pos = skip_sub_blocks(pos + 1)  # +1: the LZW minimum code size
        else:
            raise _Malformed("unknown GIF block")


def _webp_end(data: bytes) -> int:
    if len(data) < 12:
        raise _Malformed("truncated RIFF header")
    size = int.from_bytes(data[4:8], "little")
    end = 8 + size + (size & 1)
    if end > len(data):
        raise _Malformed("RIFF size runs past the end")
    return end
