"""Upload validation: the declared name/type/size, then the bytes themselves.

Pure: bytes and strings in, a result or a ``ValidationFailure`` out. Every check has its own
stable ``code`` so the API can report precisely why a file was refused.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from backend.imaging.decode import ImageError, probe, verify
from backend.imaging.header import open_header, png_chunks, sniff_format, webp_canvas_size
from backend.imaging.units import human_bytes

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

_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,10})$")
# Characters that break Content-Disposition headers or Windows file systems.
_UNSAFE_CHARS = re.compile(r'[<>:"|?*]')
# One failure type for names, declared types and bytes: the decoder's own errors carry the
# same ``upload.*`` codes, so they pass through unchanged.
ValidationFailure = ImageError


@dataclass(frozen=True)
class ImageInfo:
    format: str
    mime: str
    width: int  # as stored, before the EXIF orientation (metadata reports the displayed size)
    height: int
    frames: int
    orientation: int = 1
    has_alpha: bool = False


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
            "upload.too_large", f"The file is larger than the {human_bytes(max_bytes)} allowed."
        )


# --- bytes -----------------------------------------------------------------------------------


def inspect(data: bytes, *, declared_type: str, max_bytes: int, max_pixels: int) -> ImageInfo:
    """Checks on the actual bytes, cheapest and least allocating first.

    Size, format and declared type; the header (pixel budget, animation); then every byte
    through a decoder that treats its warnings as errors; then nothing after the image but
    what a Multi-Picture index accounts for.
    """
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

    header = probe(data, max_pixels=max_pixels)
    if header.frames > 1:
        raise ValidationFailure("upload.animated_unsupported", "Animated images are not supported.")
    trailing = verify(data, header, max_pixels=max_pixels)
    if trailing > TRAILING_SLACK_BYTES:
        raise ValidationFailure(
            "upload.trailing_data",
            "The file carries extra data after the end of the image.",
        )
    return ImageInfo(
        format=fmt,
        mime=mime,
        width=header.stored_size[0],
        height=header.stored_size[1],
        frames=header.frames,
        orientation=header.orientation,
        has_alpha=header.has_alpha,
    )


__all__ = [
    "ALLOWED_TYPES",
    "FORMAT_MIME",
    "ImageInfo",
    "ValidationFailure",
    "check_declared",
    "inspect",
    "open_header",
    "png_chunks",
    "sanitize_filename",
    "sniff_format",
    "webp_canvas_size",
]
