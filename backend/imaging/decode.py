"""The one place images are decoded: header first, bounded memory, reduced on load.

Every feature (upload validation, thumbnails, compression, sketches, AI, batches, the CLI)
decodes through ``decode`` and checks whole files through ``verify``. The order is always the
same: ``probe`` reads the header (format, size, frames, alpha, EXIF orientation) and refuses
images over the pixel budget before a single pixel is decoded; then a decoder runs that never
holds more than the work needs.

Two decoders, chosen by measurement (README, "Decoding"):
- JPEG pixels come from OpenCV's reduced decode (libjpeg scales by 1/2, 1/4 or 1/8 inside the
  IDCT): 18 ms for an 800 px image of a 12 MP photo, against 32-48 ms for libvips.
- PNG, GIF and WebP pixels come from libvips with sequential access: rows stream from the
  decoder through a box shrink, so a 49 MP RGBA PNG peaks at +40 MB where a full decode by
  Pillow or OpenCV peaks at +376 MB. WebP also shrinks on load (libwebp's scaled decode).
- ``verify`` reads every byte of the file through libvips with warnings as errors (libjpeg's
  "premature end" and "corrupt data" are warnings that OpenCV and Pillow let pass), JPEGs at
  1/8 scale, which still entropy-decodes every scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import pyvips
from PIL import Image

from backend.imaging.header import (
    Malformed,
    has_alpha,
    open_header,
    orientation_of,
    read_exif,
    sniff_format,
    webp_canvas_size,
)
from backend.imaging.layout import SLACK_BYTES, layout
from backend.imaging.units import human_pixels

Pixels = npt.NDArray[np.uint8]

# The same budget as the upload limit's default (Settings.max_image_pixels); callers that know
# the configured limit pass it.
DEFAULT_MAX_PIXELS = 50_000_000
# Interlaced PNGs and GIF frames cannot stream: libvips holds the whole frame (GIF as RGBA,
# PNG at its own bit depth). Past this many bytes such an image is refused, which keeps one
# decode within the memory a streamed 50 MP PNG never needs anyway.
MAX_FRAME_BYTES = 128 * 1024 * 1024
# Cached operations would keep decoded buffers (and the input bytes) alive between calls.
pyvips.cache_set_max(0)
# One thread per operation, as OpenCV runs (backend.core.pixels): concurrency comes from running
# one operation per core, and each libvips worker thread would hold its own row buffers.
pyvips.concurrency_set(1)

_REDUCED_JPEG_FLAGS = (
    (8, cv2.IMREAD_REDUCED_COLOR_8),
    (4, cv2.IMREAD_REDUCED_COLOR_4),
    (2, cv2.IMREAD_REDUCED_COLOR_2),
)
# Pillow's own limit can still fire (a GIF frame larger than its screen grows the canvas);
# the warning is an exception only under a warnings filter, but then it must not escape.
_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)


class ImageError(ValueError):
    """An image that cannot be used; ``code`` (``upload.*``) is stable, ``message`` for people.

    A ValueError, so callers that treat any undecodable input alike need no new except clause.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int  # displayed, after the EXIF orientation
    height: int
    orientation: int
    frames: int
    has_alpha: bool

    @property
    def stored_size(self) -> tuple[int, int]:
        """Width and height of the pixels as stored, before orientation."""
        if self.orientation >= 5:
            return self.height, self.width
        return self.width, self.height


def corrupt() -> ImageError:
    return ImageError("upload.corrupt", "The image is damaged or incomplete.")


def too_many_pixels(max_pixels: int) -> ImageError:
    return ImageError(
        "upload.too_many_pixels",
        f"The image has more pixels than the {human_pixels(max_pixels)} allowed.",
    )


def fit_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Size that fits ``long_side`` on the longer edge, keeping the aspect; never larger."""
    if width <= 0 or height <= 0 or long_side <= 0:
        raise ValueError("width, height and long_side must be positive")
    longest = max(width, height)
    if longest <= long_side:
        return width, height

    def scaled(side: int) -> int:
        # Integer round-half-up, so a 3:2 photo gives the same short side on every platform.
        return max(1, (2 * side * long_side + longest) // (2 * longest))

    if width >= height:
        return long_side, scaled(height)
    return scaled(width), long_side


# --- header ----------------------------------------------------------------------------------


def probe(data: bytes, *, max_pixels: int) -> ImageHeader:
    """What the header says, refused when over ``max_pixels``; no pixel is decoded."""
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError("upload.unrecognized", "The file is not a JPEG, PNG, WebP or GIF image.")
    # libwebp allocates the whole canvas while parsing the header, so its size is read by hand
    # before Pillow sees the file.
    if fmt == "webp" and (size := webp_canvas_size(data)) is not None:
        _check_pixels(size[0], size[1], max_pixels)
    try:
        im = open_header(data, fmt)
    except _BOMB:
        raise too_many_pixels(max_pixels) from None
    except Exception:
        raise corrupt() from None
    with im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise corrupt()
        _check_pixels(width, height, max_pixels)
        try:
            frames = _frames(im, fmt)
        except _BOMB:
            raise too_many_pixels(max_pixels) from None
        except Exception:
            raise corrupt() from None
        orientation = orientation_of(read_exif(data, fmt, im))
        alpha = has_alpha(im)
    frame = whole_frame_bytes(data, fmt, width, height)
    if frame > MAX_FRAME_BYTES:
        raise ImageError(
            "upload.too_many_pixels",
            f"This {'GIF' if fmt == 'gif' else 'interlaced PNG'} is too large to decode: at "
            f"most {MAX_FRAME_BYTES // (1024 * 1024)} MB of pixels (width × height × bytes "
            "per pixel) when it cannot be streamed.",
        )
    if orientation >= 5:
        width, height = height, width
    return ImageHeader(fmt, width, height, orientation, frames, alpha)


def whole_frame_bytes(data: bytes, fmt: str, width: int, height: int) -> int:
    """Bytes a decoder must hold at once for an image that cannot stream, else 0."""
    if fmt == "gif":
        return width * height * 4
    if fmt == "png" and len(data) >= 29 and data[12:16] == b"IHDR" and data[28] == 1:
        depth, colour = data[24], data[25]
        channels = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}.get(colour, 4)
        return width * height * channels * (2 if depth == 16 and colour != 3 else 1)
    return 0


def _frames(im: Image.Image, fmt: str) -> int:
    if fmt == "gif":
        # Only whether there is a second frame matters, and asking that skips one frame's data
        # instead of walking the whole animation as n_frames would.
        return 2 if bool(getattr(im, "is_animated", False)) else 1
    return int(getattr(im, "n_frames", 1))


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise too_many_pixels(max_pixels)


# --- pixels ----------------------------------------------------------------------------------


def decode(data: bytes, *, max_side: int | None, max_pixels: int, alpha: bool = False) -> Pixels:
    """Upright uint8 BGR pixels (BGRA when ``alpha`` and the image has alpha; otherwise alpha
    is composited on white), at most ``max_side`` on the long side (None: full size).

    Reduced while decoding where the format allows, then resized exactly with INTER_AREA.
    Raises ``ImageError`` (a ValueError) on data that is not a decodable image.
    """
    if max_side is not None and max_side < 1:
        raise ValueError("max_side must be positive")
    return decode_probed(data, probe(data, max_pixels=max_pixels), max_side=max_side, alpha=alpha)


def decode_probed(
    data: bytes, header: ImageHeader, *, max_side: int | None, alpha: bool = False
) -> Pixels:
    """``decode`` for a caller that already holds ``probe``'s answer for these exact bytes."""
    if max_side is not None and max_side < 1:
        raise ValueError("max_side must be positive")
    target = (
        fit_size(header.width, header.height, max_side)
        if max_side is not None
        else (header.width, header.height)
    )
    stored_w, stored_h = header.stored_size
    # The decode target in stored orientation; every reduced decode stays at least this big.
    need = target if header.orientation < 5 else (target[1], target[0])
    try:
        if header.format == "jpeg":
            pixels = _decode_jpeg(data, min(stored_w // need[0], stored_h // need[1]))
        else:
            # libvips and libwebp round reduced sizes; one pixel of margin keeps them >= need.
            factor = min(stored_w // (need[0] + 1), stored_h // (need[1] + 1))
            pixels = _decode_vips(data, header.format, factor, alpha=alpha)
    except ImageError:
        raise
    except (pyvips.Error, cv2.error, MemoryError, OSError):
        raise corrupt() from None
    pixels = orient(pixels, header.orientation)
    if (pixels.shape[1], pixels.shape[0]) != target:
        pixels = _resize(pixels, target)
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def _resize(pixels: Pixels, target: tuple[int, int]) -> Pixels:
    if pixels.shape[2] == 3:
        return np.asarray(cv2.resize(pixels, target, interpolation=cv2.INTER_AREA), np.uint8)
    # Straight alpha averaged as is would pull the colour of transparent pixels into edges.
    alpha = pixels[:, :, 3:4].astype(np.float32) / 255.0
    premultiplied = np.dstack((pixels[:, :, :3] * alpha, alpha[:, :, 0] * 255.0))
    small = cv2.resize(premultiplied, target, interpolation=cv2.INTER_AREA)
    opacity = small[:, :, 3:4]
    colour = np.where(opacity > 0, small[:, :, :3] * 255.0 / np.maximum(opacity, 1e-6), 0)
    out = np.dstack((colour, opacity[:, :, 0]))
    return np.asarray(np.clip(np.rint(out), 0, 255), np.uint8)


def jpeg_reduction(factor: int) -> tuple[int, int]:
    """(denominator, imdecode flags) for a JPEG that may shrink by up to ``factor``.

    libjpeg rounds reduced sizes up, so any denominator up to the factor keeps every target
    dimension within the decoded image: resizing afterwards only ever shrinks.
    """
    for denominator, flags in _REDUCED_JPEG_FLAGS:
        if factor >= denominator:
            return denominator, flags | cv2.IMREAD_IGNORE_ORIENTATION
    # Orientation is applied by us from the same EXIF reading that metadata reports, so the
    # pixels and the stored width/height can never disagree.
    return 1, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def _decode_jpeg(data: bytes, factor: int) -> Pixels:
    _, flags = jpeg_reduction(factor)
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if decoded is None:
        raise corrupt()
    return np.asarray(decoded, dtype=np.uint8)


def _load(data: bytes, fmt: str, *, shrink: int, fail_on: str) -> pyvips.Image:
    """A sequential libvips image of ``data`` with the loader ``fmt`` names (no sniffing)."""
    options: dict[str, object] = {"access": "sequential", "fail_on": fail_on}
    if fmt == "jpeg":
        return pyvips.Image.jpegload_buffer(data, shrink=shrink, **options)
    if fmt == "webp":
        return pyvips.Image.webpload_buffer(data, scale=1.0 / shrink, **options)
    if fmt == "png":
        return pyvips.Image.pngload_buffer(data, **options)
    if fmt == "gif":
        return pyvips.Image.gifload_buffer(data, **options)
    raise ValueError(f"no loader for {fmt!r}")


def _decode_vips(data: bytes, fmt: str, factor: int, *, alpha: bool) -> Pixels:
    on_load = factor if fmt == "webp" and factor >= 2 else 1
    im = _load(data, fmt, shrink=on_load, fail_on="error")
    if im.format != "uchar":
        # 16-bit PNGs keep their top 8 bits rather than clipping at 255.
        im = im.cast("uchar", shift=True)
    keep_alpha = alpha and im.hasalpha()
    if im.hasalpha() and not keep_alpha:
        # Flattened before shrinking: averaging first would pull transparent black into edges.
        im = im.flatten(background=[255] * (im.bands - 1), max_alpha=255)
    box = factor if on_load == 1 else 1
    if box >= 2:
        # A box shrink by a whole factor is what INTER_AREA does too; with sequential access
        # it pulls rows from the decoder as it goes, so the full image never exists.
        if keep_alpha:
            im = im.premultiply(max_alpha=255).shrink(box, box).unpremultiply(max_alpha=255)
        else:
            im = im.shrink(box, box)
        im = im.cast("uchar")
    raw = np.frombuffer(im.write_to_memory(), dtype=np.uint8)
    pixels = raw.reshape(im.height, im.width, im.bands)
    return _to_bgr(pixels)


def _to_bgr(pixels: Pixels) -> Pixels:
    bands = pixels.shape[2]
    if bands == 1:
        return np.asarray(cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR), np.uint8)
    if bands == 2:
        gray, opacity = pixels[:, :, 0], pixels[:, :, 1]
        return np.ascontiguousarray(np.dstack((gray, gray, gray, opacity)), dtype=np.uint8)
    if bands == 3:
        return np.asarray(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), np.uint8)
    return np.asarray(cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA), np.uint8)


def orient(pixels: Pixels, orientation: int) -> Pixels:
    """Turn stored pixels into displayed pixels per the EXIF orientation tag."""
    if orientation == 2:
        out = cv2.flip(pixels, 1)
    elif orientation == 3:
        out = cv2.rotate(pixels, cv2.ROTATE_180)
    elif orientation == 4:
        out = cv2.flip(pixels, 0)
    elif orientation == 5:
        out = cv2.transpose(pixels)
    elif orientation == 6:
        out = cv2.rotate(pixels, cv2.ROTATE_90_CLOCKWISE)
    elif orientation == 7:
        out = cv2.rotate(cv2.transpose(pixels), cv2.ROTATE_180)
    elif orientation == 8:
        out = cv2.rotate(pixels, cv2.ROTATE_90_COUNTERCLOCKWISE)
    else:
        return pixels
    return np.ascontiguousarray(out, dtype=np.uint8)


# --- whole-file checks -----------------------------------------------------------------------


def verify(data: bytes, header: ImageHeader, *, max_pixels: int) -> int:
    """Read every byte of the image through a decoder that treats warnings as errors, in
    bounded memory; then check what follows the image. Returns the count of bytes after the
    last byte the image accounts for (the caller decides how much padding it tolerates).

    Raises ``ImageError("upload.corrupt")`` on truncation, a size the data does not fill, a
    decoder warning, or a Multi-Picture index that does not describe real images.
    """
    _read_all(data, header.format, min(header.width, header.height))
    try:
        found = layout(data, header.format)
    except Malformed:
        raise corrupt() from None
    for start, end in found.secondary:
        part = data[start:end]
        part_header = probe(part, max_pixels=max_pixels)
        if part_header.format != "jpeg":
            raise corrupt()
        _read_all(part, "jpeg", min(part_header.width, part_header.height))
    return len(data) - found.end


def _read_all(data: bytes, fmt: str, short_side: int) -> None:
    # 1/8 for JPEG and WebP: both decoders still parse every byte to produce a scaled image.
    shrink = 8 if fmt in ("jpeg", "webp") and short_side >= 64 else 1
    try:
        im = _load(data, fmt, shrink=shrink, fail_on="warning")
        # avg() pulls every row through the decoder and keeps none of them.
        im.avg()
    except pyvips.Error:
        raise corrupt() from None


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_FRAME_BYTES",
    "SLACK_BYTES",
    "ImageError",
    "ImageHeader",
    "Pixels",
    "corrupt",
    "decode",
    "decode_probed",
    "fit_size",
    "jpeg_reduction",
    "orient",
    "probe",
    "too_many_pixels",
    "verify",
    "whole_frame_bytes",
]
