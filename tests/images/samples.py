"""Test images made in memory: good files of every allowed kind and the bad ones uploads meet.

Nothing is read from disk, so every byte a test depends on is visible here.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageCms
from PIL.TiffImagePlugin import IFDRational

Array = npt.NDArray[np.uint8]

RED = (220, 30, 30)
BLUE = (40, 60, 200)
# Upright picture used by the orientation samples: landscape, red block in the top-left.
UPRIGHT_SIZE = (90, 60)

MAKE, MODEL, LENS = "Canon", "EOS R5", "RF24-70mm F2.8 L IS USM"
# 33°52'7.8" S, 151°12'30" W: both negative in signed decimal degrees.
GPS_SOUTH_WEST = ((33, 52, Fraction(78, 10)), "S", (151, 12, 30), "W")
GPS_NORTH_EAST = ((48, 51, Fraction(2412, 100)), "N", (2, 21, Fraction(75, 10)), "E")


def dms_to_decimal(dms: tuple[Any, ...], ref: str) -> float:
    value = float(dms[0]) + float(dms[1]) / 60 + float(dms[2]) / 3600
    return -value if ref in ("S", "W") else value


def _rational(value: Any) -> IFDRational:
    fraction = Fraction(value)
    return IFDRational(fraction.numerator, fraction.denominator)


# --- pixels --------------------------------------------------------------------------------


def solid(size: tuple[int, int], color: tuple[int, int, int] = RED) -> Image.Image:
    return Image.new("RGB", size, color)


def photo_like(width: int, height: int, *, seed: int = 0) -> Array:
    """Smooth gradients plus sensor-like noise: compresses like a photo, unlike flat colour."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    channels = [
        60 + 150 * x + 20 * np.sin(9 * y),
        40 + 170 * y + 25 * np.cos(7 * x),
        200 - 120 * (x + y) / 2 + 15 * np.sin(5 * (x - y)),
    ]
    image = np.empty((height, width, 3), dtype=np.uint8)
    for index, channel in enumerate(channels):
        noise = rng.normal(0.0, 6.0, (height, width)).astype(np.float32)
        image[..., index] = np.clip(channel + noise, 0, 255).astype(np.uint8)
    return image


def encode_jpeg_cv2(bgr: Array, quality: int = 90) -> bytes:
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return bytes(buffer.tobytes())


# --- EXIF ----------------------------------------------------------------------------------


def full_exif(
    *,
    orientation: int | None = 1,
    gps: tuple[Any, ...] | None = GPS_SOUTH_WEST,
    exposure: Any = Fraction(1, 250),
    datetime_original: str = "2024:05:01 10:20:30",
    extra_exif: Mapping[int, Any] | None = None,
) -> Image.Exif:
    """IFD0, Exif sub-IFD and GPS IFD, the way a camera writes them."""
    exif = Image.Exif()
    exif[0x010F] = MAKE
    exif[0x0110] = MODEL
    exif[0x0131] = "Firmware 1.8.1"
    exif[0x0132] = "2024:05:02 08:00:00"
    if orientation is not None:
        exif[0x0112] = orientation
    # Longer than the raw dictionary keeps.
    exif[0x010E] = "x" * 5000

    sub = exif.get_ifd(0x8769)
    sub[0x9003] = datetime_original
    sub[0x829A] = _rational(exposure)
    sub[0x829D] = _rational(Fraction(28, 10))
    sub[0x8827] = 400
    sub[0x920A] = _rational(50)
    sub[0xA434] = LENS
    sub[0x9000] = b"0232"
    sub[0x9101] = b"\x01\x02\x03\x00"
    sub[0x9286] = b"ASCII\x00\x00\x00Summer in the park"
    sub[0x927C] = b"\x00\x01vendor-secret" * 40  # MakerNote: dropped
    for tag, value in (extra_exif or {}).items():
        sub[tag] = value

    if gps is not None:
        lat, lat_ref, lon, lon_ref = gps
        gps_ifd = exif.get_ifd(0x8825)
        gps_ifd[0] = b"\x02\x03\x00\x00"
        gps_ifd[1] = lat_ref
        gps_ifd[2] = tuple(_rational(v) for v in lat)
        gps_ifd[3] = lon_ref
        gps_ifd[4] = tuple(_rational(v) for v in lon)
    return exif


def orientation_exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def insert_app1(jpeg_bytes: bytes, payload: bytes) -> bytes:
    """Put an APP1 segment right after SOI; for EXIF blocks Pillow would refuse to write."""
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg_bytes[:2] + segment + jpeg_bytes[2:]


def _ifd_entry(tag: int, typ: int, count: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\x00")


def broken_exif_payloads() -> dict[str, bytes]:
    """APP1 payloads whose EXIF is damaged in the ways real files are."""
    header = b"Exif\x00\x00"
    tiff = b"II*\x00" + struct.pack("<I", 8)
    # IFD0 with an Exif pointer far past the end of the block.
    dangling = (
        tiff
        + struct.pack("<H", 2)
        + _ifd_entry(0x010F, 2, 4, b"ACME")
        + _ifd_entry(0x8769, 4, 1, struct.pack("<I", 0x7FFF0000))
        + struct.pack("<I", 0)
    )
    # An entry claiming a huge count of rationals stored beyond the block.
    huge_count = (
        tiff
        + struct.pack("<H", 1)
        + _ifd_entry(0x829A, 5, 0x0FFFFFFF, struct.pack("<I", 64))
        + struct.pack("<I", 0)
    )
    # IFD0 pointing at itself as its next IFD: a loop.
    looping = (
        tiff + struct.pack("<H", 1) + _ifd_entry(0x0112, 3, 1, b"\x06\x00") + b"\x08\x00\x00\x00"
    )
    return {
        "garbage": header + b"\x13\x37" * 40,
        "bad_byte_order": header + b"XX*\x00" + b"\x00" * 20,
        "ifd_offset_past_end": header + b"II*\x00" + struct.pack("<I", 0xFFFFFF00),
        "dangling_exif_pointer": header + dangling,
        "huge_count": header + huge_count,
        "looping_ifd": header + looping,
        "truncated": header + tiff + struct.pack("<H", 40),
        "empty": header,
    }


ExifEntry = tuple[int, int, Any]  # tag, TIFF type, value
_ASCII, _SHORT, _LONG, _RATIONAL, _UNDEFINED = 2, 3, 4, 5, 7


def _field(typ: int, value: Any) -> tuple[bytes, int]:
    if typ == _ASCII:
        raw = value.encode("latin-1") + b"\x00"
        return raw, len(raw)
    if typ == _UNDEFINED:
        return bytes(value), len(value)
    if typ == _RATIONAL:
        pairs = [value] if isinstance(value[0], int) else list(value)
        return b"".join(struct.pack("<II", n, d) for n, d in pairs), len(pairs)
    values = value if isinstance(value, tuple) else (value,)
    code = "H" if typ == _SHORT else "I"
    return struct.pack(f"<{len(values)}{code}", *values), len(values)


def _ifd(entries: list[ExifEntry], offset: int) -> bytes:
    table = struct.pack("<H", len(entries))
    data = b""
    data_start = offset + 2 + 12 * len(entries) + 4
    for tag, typ, value in sorted(entries, key=lambda entry: entry[0]):
        payload, count = _field(typ, value)
        if len(payload) <= 4:
            slot = payload.ljust(4, b"\x00")
        else:
            slot = struct.pack("<I", data_start + len(data))
            data += payload + b"\x00" * (len(payload) & 1)
        table += struct.pack("<HHI", tag, typ, count) + slot
    return table + struct.pack("<I", 0) + data


def exif_block(
    ifd0: list[ExifEntry],
    exif_ifd: list[ExifEntry] | None = None,
    gps_ifd: list[ExifEntry] | None = None,
) -> bytes:
    """A little-endian EXIF block written by hand, so values can be exactly as wrong as a
    test needs (Pillow's writer coerces them to the tag's declared type)."""

    def build(pointers: dict[int, int]) -> bytes:
        entries = list(ifd0) + [(tag, _LONG, where) for tag, where in pointers.items()]
        return _ifd(entries, 8)

    subs = [(tag, ifd) for tag, ifd in ((0x8769, exif_ifd), (0x8825, gps_ifd)) if ifd is not None]
    placeholder = build({tag: 0 for tag, _ in subs})
    offset = 8 + len(placeholder)
    pointers: dict[int, int] = {}
    tail = b""
    for tag, entries in subs:
        pointers[tag] = offset + len(tail)
        tail += _ifd(entries, offset + len(tail))
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + build(pointers) + tail


def odd_values_exif() -> bytes:
    """Zero denominators, wrong types and unparsable dates in an otherwise sound block."""
    return exif_block(
        [(0x010F, _ASCII, "  Nikon\x00\x00 "), (0x0112, _SHORT, 9)],
        [
            (0x829A, _RATIONAL, (0, 0)),
            (0x920A, _RATIONAL, (35, 0)),
            (0x9003, _ASCII, "not a date"),
            (0x8827, _SHORT, 0),
            (0xA434, _ASCII, ""),
            (0xBEEF, _UNDEFINED, b"\xff\xfe\x00binary"),
        ],
        [
            (1, _ASCII, "N"),
            (2, _RATIONAL, ((0, 0), (0, 0), (0, 0))),
            (3, _ASCII, "E"),
            (4, _ASCII, "twelve degrees"),
        ],
    )


def gps_only_exif(
    lat: tuple[int, int, int], lat_ref: str, lon: tuple[int, int, int], lon_ref: str
) -> bytes:
    def dms(values: tuple[int, int, int]) -> tuple[tuple[int, int], ...]:
        return tuple((v, 1) for v in values)

    return exif_block(
        [(0x010F, _ASCII, "Phone")],
        None,
        [
            (1, _ASCII, lat_ref),
            (2, _RATIONAL, dms(lat)),
            (3, _ASCII, lon_ref),
            (4, _RATIONAL, dms(lon)),
        ],
    )


# --- good files ----------------------------------------------------------------------------


def jpeg(
    size: tuple[int, int] = (64, 48),
    *,
    image: Image.Image | None = None,
    exif: Image.Exif | bytes | None = None,
    quality: int = 90,
    **options: Any,
) -> bytes:
    im = image if image is not None else solid(size)
    buffer = io.BytesIO()
    if exif is not None:
        options["exif"] = exif.tobytes() if isinstance(exif, Image.Exif) else exif
    im.save(buffer, "JPEG", quality=quality, **options)
    return buffer.getvalue()


def jpeg_full_exif(**kwargs: Any) -> bytes:
    return jpeg((120, 80), exif=full_exif(**kwargs))


def jpeg_with_icc_and_exif() -> bytes:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return jpeg((400, 300), exif=full_exif(), icc_profile=icc)


def progressive_jpeg() -> bytes:
    return jpeg((300, 200), image=Image.fromarray(photo_like(300, 200)), progressive=True)


def grayscale_jpeg() -> bytes:
    return jpeg((80, 60), image=Image.new("L", (80, 60), 128))


def cmyk_jpeg() -> bytes:
    # Pure red in CMYK: no cyan, full magenta and yellow.
    return jpeg((80, 60), image=Image.new("CMYK", (80, 60), (0, 255, 255, 0)))


def jpeg_with_comment(comment: bytes) -> bytes:
    return jpeg((64, 48), comment=comment)


def upright_picture(size: tuple[int, int] = UPRIGHT_SIZE) -> Image.Image:
    """Blue picture whose top-left third is red: any wrong flip or turn moves the red."""
    width, height = size
    im = solid(size, BLUE)
    im.paste(RED, (0, 0, width // 3, height // 3))
    return im


# How to store an upright picture so that applying EXIF orientation N shows it upright again.
_STORE_FOR_ORIENTATION = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def stored_for_orientation(upright: Image.Image, orientation: int) -> Image.Image:
    method = _STORE_FOR_ORIENTATION[orientation]
    return upright if method is None else upright.transpose(method)


def oriented_jpeg(orientation: int, size: tuple[int, int] = UPRIGHT_SIZE) -> bytes:
    """Displayed upright (red top-left) only when EXIF orientation is honoured."""
    stored = stored_for_orientation(upright_picture(size), orientation)
    return jpeg(image=stored, exif=orientation_exif(orientation), quality=95)


def png(
    size: tuple[int, int] = (64, 48), *, image: Image.Image | None = None, **options: Any
) -> bytes:
    im = image if image is not None else solid(size)
    buffer = io.BytesIO()
    im.save(buffer, "PNG", **options)
    return buffer.getvalue()


def png_rgba() -> bytes:
    """Left half opaque red, right half fully transparent (black underneath)."""
    rgba = np.zeros((60, 80, 4), dtype=np.uint8)
    rgba[:, :40] = (*RED, 255)
    return png(image=Image.fromarray(rgba, "RGBA"))


def png_palette(*, transparent: bool = False) -> bytes:
    im = upright_picture((80, 60)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    if not transparent:
        return png(image=im)
    blue_index = im.getpixel((79, 59))
    return png(image=im, transparency=blue_index)


def png_16bit_rgb() -> bytes:
    bgr = np.zeros((60, 80, 3), dtype=np.uint16)
    bgr[..., 2] = 0xDC00  # red, high byte 220
    bgr[..., 1] = 0x1E00
    bgr[..., 0] = 0x1E00
    ok, buffer = cv2.imencode(".png", bgr)
    assert ok
    return bytes(buffer.tobytes())


def png_16bit_gray(value: int = 0x8000) -> bytes:
    gray = np.full((60, 80), value, dtype=np.uint16)
    return png(image=Image.fromarray(gray))


def png_gray() -> bytes:
    return png(image=Image.new("L", (80, 60), 90))


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(ctype + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", crc)


def tiff_payload(exif: Image.Exif) -> bytes:
    # PNG's eXIf holds the bare TIFF structure, without JPEG's "Exif\0\0" preamble.
    return exif.tobytes().removeprefix(b"Exif\x00\x00")


def png_with_exif_after_idat(exif: Image.Exif, size: tuple[int, int] = UPRIGHT_SIZE) -> bytes:
    """eXIf placed after the image data, which the PNG spec allows and Pillow only finds by
    decoding; built from an ordinary PNG by moving chunks."""
    plain = png(image=upright_picture(size))
    iend = plain.rindex(b"IEND") - 4
    raw = tiff_payload(exif)
    return plain[:iend] + png_chunk(b"eXIf", raw) + plain[iend:]


def oriented_png(orientation: int, size: tuple[int, int] = UPRIGHT_SIZE) -> bytes:
    stored = stored_for_orientation(upright_picture(size), orientation)
    plain = png(image=stored)
    iend = plain.rindex(b"IEND") - 4
    return (
        plain[:iend]
        + png_chunk(b"eXIf", tiff_payload(orientation_exif(orientation)))
        + plain[iend:]
    )


def webp(
    size: tuple[int, int] = (64, 48), *, image: Image.Image | None = None, **options: Any
) -> bytes:
    im = image if image is not None else solid(size)
    buffer = io.BytesIO()
    im.save(buffer, "WEBP", quality=90, **options)
    return buffer.getvalue()


def webp_with_exif() -> bytes:
    return webp((120, 80), exif=full_exif(orientation=1).tobytes())


def gif(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    upright_picture(size).convert("P", palette=Image.Palette.ADAPTIVE).save(buffer, "GIF")
    return buffer.getvalue()


def _frames(size: tuple[int, int]) -> list[Image.Image]:
    return [solid(size, color) for color in (RED, BLUE, (30, 200, 30))]


def gif_animated(size: tuple[int, int] = (64, 48)) -> bytes:
    first, *rest = (f.convert("P", palette=Image.Palette.ADAPTIVE) for f in _frames(size))
    buffer = io.BytesIO()
    first.save(buffer, "GIF", save_all=True, append_images=rest, duration=100, loop=0)
    return buffer.getvalue()


def webp_animated(size: tuple[int, int] = (64, 48)) -> bytes:
    first, *rest = _frames(size)
    buffer = io.BytesIO()
    first.save(buffer, "WEBP", save_all=True, append_images=rest, duration=100, loop=0)
    return buffer.getvalue()


def apng(size: tuple[int, int] = (64, 48)) -> bytes:
    first, *rest = _frames(size)
    buffer = io.BytesIO()
    first.save(buffer, "PNG", save_all=True, append_images=rest, duration=100, loop=0)
    return buffer.getvalue()


def mpo() -> bytes:
    """Multi-Picture JPEG (what Ultra HDR gain maps and stereo cameras write): a second
    complete JPEG follows the first one's EOI, announced by an APP2 "MPF" segment."""
    left, right = solid((64, 48), RED), solid((64, 48), BLUE)
    buffer = io.BytesIO()
    left.save(buffer, "MPO", save_all=True, append_images=[right])
    return buffer.getvalue()


ALL_GOOD: dict[str, tuple[str, str]] = {
    # name: (format, mime) — the sample functions are looked up by name in tests.
    "jpeg": ("jpeg", "image/jpeg"),
    "progressive_jpeg": ("jpeg", "image/jpeg"),
    "grayscale_jpeg": ("jpeg", "image/jpeg"),
    "cmyk_jpeg": ("jpeg", "image/jpeg"),
    "jpeg_full_exif": ("jpeg", "image/jpeg"),
    "mpo": ("jpeg", "image/jpeg"),
    "png": ("png", "image/png"),
    "png_rgba": ("png", "image/png"),
    "png_palette": ("png", "image/png"),
    "png_16bit_rgb": ("png", "image/png"),
    "png_16bit_gray": ("png", "image/png"),
    "png_gray": ("png", "image/png"),
    "webp": ("webp", "image/webp"),
    "webp_with_exif": ("webp", "image/webp"),
    "gif": ("gif", "image/gif"),
}


# --- bad files -----------------------------------------------------------------------------


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


def truncated_jpeg() -> bytes:
    return truncated(jpeg((300, 200), image=Image.fromarray(photo_like(300, 200))))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A few dozen bytes whose header claims width×height pixels: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def jpeg_bomb(width: int = 65_000, height: int = 65_000) -> bytes:
    """A tiny baseline JPEG whose frame header is rewritten to claim a huge size."""
    data = bytearray(jpeg((16, 16)))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def gif_bomb(width: int = 65_000, height: int = 65_000) -> bytes:
    data = bytearray(gif((16, 16)))
    struct.pack_into("<HH", data, 6, width, height)
    return bytes(data)


def gif_frame_larger_than_screen(screen: tuple[int, int] = (8, 8)) -> bytes:
    """The first frame is bigger than the logical screen, so Pillow grows the canvas."""
    data = bytearray(gif((64, 48)))
    struct.pack_into("<HH", data, 6, *screen)
    return bytes(data)


def webp_bomb(width: int = 10_000, height: int = 10_000) -> bytes:
    """A real, fully decodable lossless WebP of width×height in under 40 bytes.

    A one-colour lossless image codes every pixel with zero bits, so only the size field in
    the VP8L header has to change. Opening it makes libwebp reserve the whole canvas.
    """
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), RED).save(buffer, "WEBP", lossless=True, method=0)
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"VP8L"
    assert data[20] == 0x2F
    bits = int.from_bytes(data[21:25], "little") & ~((1 << 28) - 1)
    bits |= (width - 1) | ((height - 1) << 14)
    data[21:25] = bits.to_bytes(4, "little")
    return bytes(data)


def xlsx_bytes() -> bytes:
    """What an Excel file looks like inside: a zip with OOXML parts."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
            'package/2006/content-types"/>',
        )
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/worksheets/sheet1.xml", "<worksheet/>")
    return buffer.getvalue()


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.sh", "#!/bin/sh\necho pwned\n")
    return buffer.getvalue()


def svg() -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b"<script>alert(1)</script><rect width='10' height='10'/></svg>"
    )


def html() -> bytes:
    return b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>"


def polyglot(image: bytes) -> bytes:
    """An image followed by a zip archive: valid as both, and a classic smuggling trick."""
    return image + zip_archive()


def jpeg_zip_polyglot() -> bytes:
    return polyglot(jpeg())
