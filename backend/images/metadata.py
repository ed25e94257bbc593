"""Image metadata: displayed size, content hash and a JSON-safe summary of the EXIF data.

Pure: bytes in, a ``Metadata`` out. EXIF comes from arbitrary cameras and editors, so every
read of it is defensive: a broken block yields partial data or ``exif=None``, never an error.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from PIL import Image
from PIL.ExifTags import GPSTAGS, TAGS
from PIL.TiffImagePlugin import IFDRational

from backend.images.validation import ValidationFailure
from backend.imaging.header import (
    first_value,
    open_header,
    orientation_of,
    read_exif,
    sniff_format,
)

EXIF_IFD = 0x8769
GPS_IFD = 0x8825

_MAKER_NOTE = 0x927C
_USER_COMMENT = 0x9286
# Pointers to other IFDs: offsets into the EXIF block, meaningless to anyone reading raw.
_POINTER_TAGS = {EXIF_IFD, GPS_IFD, 0xA005, 0x014A}
_MAX_RAW_VALUE_CHARS = 1024

_TAG = {
    "make": 0x010F,
    "model": 0x0110,
    "datetime_original": 0x9003,
    "exposure_time": 0x829A,
    "iso": 0x8827,  # ISOSpeedRatings, renamed PhotographicSensitivity in EXIF 2.3
    "iso_speed": 0x8833,
    "focal_length": 0x920A,
    "lens_model": 0xA434,
}
_GPS = {"lat_ref": 1, "lat": 2, "lon_ref": 3, "lon": 4}


@dataclass(frozen=True)
class Metadata:
    width: int
    height: int
    format: str
    size_bytes: int
    sha256: str
    orientation: int
    exif: dict[str, Any] | None


def extract(data: bytes) -> Metadata:
    """Metadata of an image that has already passed validation.

    Header and EXIF only (Pillow's lazy open, no pixel decode): the one read of image bytes
    outside ``backend.imaging.decode``, and it shares that module's EXIF orientation reading.

    Raises ``ValidationFailure("upload.corrupt")`` only when not even the header is readable;
    problems inside EXIF never raise.
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise ValidationFailure("upload.unrecognized", "The file is not a supported image.")
    try:
        im = open_header(data, fmt)
    except Exception:
        raise ValidationFailure("upload.corrupt", "The image is damaged or incomplete.") from None
    with im:
        width, height = im.size
        exif = read_exif(data, fmt, im)

    orientation = orientation_of(exif)
    if orientation >= 5:
        width, height = height, width
    return Metadata(
        width=width,
        height=height,
        format=fmt,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        orientation=orientation,
        exif=summarize_exif(exif) if exif is not None else None,
    )


def _get_ifd(exif: Image.Exif, tag: int) -> dict[int, Any]:
    try:
        ifd = exif.get_ifd(tag)
    except Exception:
        return {}
    return dict(ifd) if isinstance(ifd, Mapping) else {}


def summarize_exif(exif: Image.Exif) -> dict[str, Any]:
    """The API's ``exif`` object: a few well-known fields plus every readable tag in ``raw``."""
    try:
        ifd0: dict[int, Any] = dict(exif)
    except Exception:
        ifd0 = {}
    exif_ifd = _get_ifd(exif, EXIF_IFD)
    gps_ifd = _get_ifd(exif, GPS_IFD)

    def tag(number: int) -> Any:
        # Some writers put Exif-IFD tags in IFD0; the sub-IFD is the proper place, so it wins.
        return exif_ifd.get(number, ifd0.get(number))

    return {
        "camera_make": _safe(_text, tag(_TAG["make"])),
        "camera_model": _safe(_text, tag(_TAG["model"])),
        "datetime_original": _safe(_exif_datetime, tag(_TAG["datetime_original"])),
        "lens_model": _safe(_text, tag(_TAG["lens_model"])),
        "iso": _safe(_iso, tag(_TAG["iso"])) or _safe(_iso, tag(_TAG["iso_speed"])),
        "focal_length": _safe(_focal_length, tag(_TAG["focal_length"])),
        "exposure_time": _safe(_exposure_time, tag(_TAG["exposure_time"])),
        "gps": _safe(_gps, gps_ifd),
        "raw": _raw(ifd0, exif_ifd, gps_ifd),
    }


def _safe(convert: Any, value: Any) -> Any:
    if value is None:
        return None
    try:
        return convert(value)
    except Exception:
        return None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    # Pillow decodes EXIF ASCII as Latin-1, but phones and exiftool write UTF-8 there.
    try:
        value = value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        pass
    # Postgres refuses NUL in JSON text, and EXIF strings are NUL-padded.
    text = value.replace("\x00", "").strip()
    return text or None


def _number(value: Any) -> float | None:
    value = first_value(value)
    if isinstance(value, IFDRational):
        if value.denominator == 0:
            return None
        number = float(value.numerator) / float(value.denominator)
    elif isinstance(value, int | float | Fraction):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


def _exif_datetime(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    for layout in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(text[:19], layout).isoformat()
        except ValueError:
            continue
    return None


def _iso(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number > 0 else None


def _focal_length(value: Any) -> float | None:
    number = _number(value)
    return round(number, 3) if number is not None and number > 0 else None


def _exposure_time(value: Any) -> str | None:
    seconds = _number(value)
    if seconds is None or seconds <= 0:
        return None
    # Photographers read short exposures as fractions ("1/250") and long ones as seconds.
    if seconds <= 0.25001:
        return f"1/{round(1 / seconds)}"
    return f"{seconds:.1f}".removesuffix(".0")


def _gps(gps_ifd: dict[int, Any]) -> dict[str, float] | None:
    lat = _degrees(gps_ifd.get(_GPS["lat"]), gps_ifd.get(_GPS["lat_ref"]), "S")
    lon = _degrees(gps_ifd.get(_GPS["lon"]), gps_ifd.get(_GPS["lon_ref"]), "W")
    if lat is None or lon is None or abs(lat) > 90 or abs(lon) > 180:
        return None
    return {"lat": lat, "lon": lon}


def _degrees(value: Any, ref: Any, negative_ref: str) -> float | None:
    if not isinstance(value, tuple | list) or not value:
        return None
    parts = [_number(v) for v in value[:3]]
    if any(p is None for p in parts):
        return None
    weights = (1.0, 60.0, 3600.0)
    degrees = sum(p / w for p, w in zip(parts, weights, strict=False) if p is not None)
    ref_text = _text(ref) or ""
    if ref_text.upper().startswith(negative_ref):
        degrees = -degrees
    return round(degrees, 7)


def _raw(ifd0: dict[int, Any], exif_ifd: dict[int, Any], gps_ifd: dict[int, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for ifd, names, unknown in (
        (ifd0, TAGS, "Tag"),
        (exif_ifd, TAGS, "Tag"),
        (gps_ifd, GPSTAGS, "GPSTag"),
    ):
        for number, value in ifd.items():
            if not isinstance(number, int) or number in _POINTER_TAGS or number == _MAKER_NOTE:
                continue
            name = names.get(number) or f"{unknown}0x{number:04X}"
            try:
                if number == _USER_COMMENT and isinstance(value, bytes):
                    safe = _user_comment(value)
                else:
                    safe = json_safe(value)
                if safe is None:
                    continue
                if len(json.dumps(safe, allow_nan=False)) > _MAX_RAW_VALUE_CHARS:
                    continue
            except Exception:
                continue
            raw[name] = safe
    return raw


def _user_comment(value: bytes) -> str | None:
    # The first eight bytes name the character set.
    prefix, body = value[:8], value[8:]
    if prefix.startswith(b"UNICODE"):
        # UCS-2 in the block's byte order, which is not at hand here; for mostly-Latin text
        # the zero high bytes show where the byte order puts them.
        little = body[1::2].count(0) >= body[0::2].count(0)
        return _text(body.decode("utf-16-le" if little else "utf-16-be", "replace"))
    return _text(body.decode("utf-8", "replace"))


def json_safe(value: Any) -> Any:
    """A value ``json.dumps(..., allow_nan=False)`` accepts and Postgres JSONB stores, or None."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, IFDRational | Fraction | float):
        return _number(value)
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bytes):
        stripped = value.rstrip(b"\x00")
        try:
            text = stripped.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
        return text if text.isprintable() else value.hex()
    if isinstance(value, tuple | list):
        items = [json_safe(v) for v in value]
        return items
    return None
