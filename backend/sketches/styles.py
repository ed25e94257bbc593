"""Sketch styles: seven looks × three methods, built from fast OpenCV primitives.

Pure: arrays in, arrays out, plus ``load``/``encode``/``sketch_bytes`` for bytes at the edges.

Speed comes from working at two scales. Everything smooth (tone, colour fields, washes, paper
and stroke textures) is computed on a reduced copy of about 0.2-0.3 MP and upsampled once; the
line layer that makes a drawing look sharp is computed at full resolution from the full-size
gray image, against a local mean that also comes from the reduced copy. Sizes of blurs, strokes
and grain are given in pixels of that reduced copy, so a 12 MP photo and its 1 MP thumbnail
come out looking the same. ``cv2.stylization`` and ``cv2.pencilSketch`` are not used: on a
12 MP image they take seconds, where these styles take tens of milliseconds.

Each method is its own interpretation of the style (basic: plainest and softest; advanced:
firmer tone and deeper colour; artistic: strokes, texture and line work), not a small variation:
``tests/sketches/test_quality.py`` keeps them apart, keeps white white and keeps flat areas of
the washes and chalk free of added texture, on real photographs.
"""

from __future__ import annotations

import math
import numbers
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from backend.imaging.decode import DEFAULT_MAX_PIXELS, decode

Pixels = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]
ImageT = TypeVar("ImageT", Pixels, Floats)


@dataclass(frozen=True)
class StyleInfo:
    id: str
    name: str
    description: str
    grayscale: bool


@dataclass(frozen=True)
class MethodInfo:
    id: str
    name: str
    description: str


STYLES: dict[str, StyleInfo] = {
    s.id: s
    for s in (
        StyleInfo("pencil", "Pencil", "Graphite lines and shading on textured paper.", True),
        StyleInfo("charcoal", "Charcoal", "Dark, smudged strokes with a coarse grain.", True),
        StyleInfo(
            "watercolor", "Watercolor", "Soft transparent washes with bleeding edges.", False
        ),
        StyleInfo("ink", "Ink", "Crisp black lines and fills on white.", True),
        StyleInfo("pastel", "Pastel", "Light, soft colours with a chalky texture.", False),
        StyleInfo("oil", "Oil", "Painterly brush strokes and thick colour.", False),
        StyleInfo(
            "acrylic",
            "Acrylic",
            "Opaque colour in simplified shapes, brush and knife marks.",
            False,
        ),
    )
}

METHODS: dict[str, MethodInfo] = {
    m.id: m
    for m in (
        MethodInfo("basic", "Basic", "The plainest, softest rendering of the style."),
        MethodInfo("advanced", "Advanced", "A bolder, finished take: firmer tone, deeper colour."),
        MethodInfo("artistic", "Artistic", "Visible strokes, texture and line work."),
    )
}

FORMATS = ("png", "jpeg", "webp")

_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
# The reduced working copy aims at this many pixels (~650×460) and is at least half the input
# on each side: the smooth layers never need more, and their cost stays a small multiple of a
# plain dodge sketch at any input size, 512² thumbnails included.
_WORK_PIXELS = 300_000
# Washes and blended chalk have no detail a smaller copy would lose. The gray styles' single
# channel is cheap at small sizes, where their grain and strokes need every pixel: factor 1.
_STYLE_WORK: dict[str, tuple[int, int]] = {
    "watercolor": (180_000, 2),
    "pastel": (180_000, 2),
    "pencil": (300_000, 1),
    "charcoal": (300_000, 1),
    "ink": (300_000, 1),
}
_MIN_FACTOR = 2
# Side of the reduced copy (sqrt of ~1000×750) at which the style constants were tuned.
_REFERENCE_SIDE = math.sqrt(750_000)


class UnknownStyle(ValueError):
    def __init__(self, style: str) -> None:
        super().__init__(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
        self.style = style


class UnknownMethod(ValueError):
    def __init__(self, method: str) -> None:
        super().__init__(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        self.method = method


@dataclass(frozen=True)
class SketchParams:
    intensity: float = 0.5
    max_side: int = 2048
    # None: the style's own default (see ``default_format``).
    format: str | None = None

    def __post_init__(self) -> None:
        value = self.intensity
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(float(value))
            or not 0.0 <= float(value) <= 1.0
        ):
            raise ValueError(f"intensity must be a number from 0 to 1, not {value!r}")
        side = self.max_side
        if (
            isinstance(side, bool)
            or not isinstance(side, numbers.Integral)
            or not (256 <= int(side) <= 8192)
        ):
            raise ValueError(f"max_side must be a whole number from 256 to 8192, not {side!r}")
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {self.format!r}")


def default_format(style: str) -> str:
    """PNG for the gray styles (lossless lines, small files), JPEG for the colour ones.

    A 2048-pixel colour PNG costs ~4× a JPEG at quality 90 to encode and is ~4× larger, for
    painted textures where the JPEG is indistinguishable.
    """
    info = STYLES.get(style)
    return "png" if info is None or info.grayscale else "jpeg"


def output_format(style: str, params: SketchParams) -> str:
    """The format a sketch is encoded in: the requested one, else the style's default."""
    return params.format or default_format(style)


# --- bytes in, bytes out ---------------------------------------------------------------------


def load(data: bytes, *, max_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Pixels:
    """Upright BGR pixels no longer than ``max_side`` on the long side; never upscaled.

    Decoded through ``backend.imaging.decode``: reduced on load where the format allows, alpha
    composited on white, palettes and 16-bit images as 8-bit BGR. Raises ValueError on data
    that is not a decodable JPEG, PNG, WebP or GIF image.
    """
    if max_side < 1:
        raise ValueError("max_side must be positive")
    return decode(data, max_side=max_side, max_pixels=max_pixels)


def encode(image: Pixels, fmt: str, *, quality: int = 90) -> bytes:
    """PNG, JPEG or WebP bytes without metadata; a 2-D image stays gray in PNG and JPEG.

    WebP has no gray colour type, so gray comes back from a WebP as three equal channels.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not 1 <= quality <= 100:
        raise ValueError("quality must be from 1 to 100")
    if fmt == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1]
    elif fmt == "webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    else:
        params = []
    ok, buffer = cv2.imencode(_EXTENSIONS[fmt], _as_uint8(image), params)
    if not ok:
        raise ValueError(f"could not encode a {fmt} image")
    return bytes(buffer.tobytes())


def sketch_bytes(
    data: bytes, style: str, method: str, params: SketchParams
) -> tuple[bytes, int, int]:
    """Decode, draw and encode in one call: (encoded bytes, width, height)."""
    _check_names(style, method)
    drawn = render(load(data, max_side=params.max_side), style, method, params)
    height, width = drawn.shape[:2]
    return encode(drawn, output_format(style, params)), width, height


# --- rendering -------------------------------------------------------------------------------


def render(
    image_bgr: npt.NDArray[np.generic],
    style: str,
    method: str,
    params: SketchParams | None = None,
) -> Pixels:
    """The image drawn in ``style`` with ``method``, at the input's size.

    Gray styles (pencil, charcoal, ink) return H×W, colour styles H×W×3 BGR. Accepts gray,
    BGR and BGRA input (alpha is composited on white). Deterministic: textures are seeded.
    """
    _check_names(style, method)
    params = params or SketchParams()
    bgr = _to_bgr(image_bgr)
    canvas = _Canvas(bgr, style, method, colour=not STYLES[style].grayscale)
    out = _RENDERERS[style](canvas, method, float(params.intensity))
    return np.ascontiguousarray(out, dtype=np.uint8)


def _check_names(style: str, method: str) -> None:
    if style not in STYLES:
        raise UnknownStyle(style)
    if method not in METHODS:
        raise UnknownMethod(method)


def _as_uint8(image: npt.NDArray[np.generic]) -> Pixels:
    if image.dtype == np.uint8:
        return np.asarray(image, dtype=np.uint8)
    if image.dtype == np.uint16:
        return np.asarray(image.astype(np.uint16) >> 8, dtype=np.uint8)
    if image.dtype == np.bool_:
        return np.asarray(image, dtype=np.uint8) * np.uint8(255)
    if np.issubdtype(image.dtype, np.floating):
        # Floats are taken as 0..1, the convention of skimage and of most float pipelines.
        return np.asarray(np.clip(np.nan_to_num(image) * 255.0 + 0.5, 0, 255), dtype=np.uint8)
    raise ValueError(f"unsupported pixel type {image.dtype}")


def _to_bgr(image: npt.NDArray[np.generic]) -> Pixels:
    pixels = _as_uint8(np.asarray(image))
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim not in (2, 3) or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"expected a non-empty H×W, H×W×3 or H×W×4 image, not {pixels.shape}")
    if pixels.ndim == 2:
        return np.asarray(cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR), np.uint8)
    if pixels.shape[2] == 4:
        alpha = pixels[:, :, 3:4].astype(np.float32) / 255.0
        over_white = pixels[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.asarray(over_white + 0.5, dtype=np.uint8)
    if pixels.shape[2] != 3:
        raise ValueError(f"expected 1, 3 or 4 channels, not {pixels.shape[2]}")
    return np.ascontiguousarray(pixels)


class _Canvas:
    """The input at full size and as a reduced working copy, with shared derived layers."""

    def __init__(self, bgr: Pixels, style: str, method: str, *, colour: bool) -> None:
        self.bgr = bgr
        self.height, self.width = bgr.shape[:2]
        work, least = _STYLE_WORK.get(style, (_WORK_PIXELS, _MIN_FACTOR))
        factor = max(least, round(math.sqrt(self.height * self.width / work)))
        # Each reduced side keeps at least one pixel, whatever the aspect ratio.
        self.factor = min(factor, self.height, self.width)
        self.colour = colour
        self.style = style
        self.method = method

    def seed(self, what: str) -> int:
        return zlib.crc32(f"{self.style}/{self.method}/{what}".encode())

    @cached_property
    def gray(self) -> Pixels:
        return np.asarray(cv2.cvtColor(self.bgr, cv2.COLOR_BGR2GRAY), np.uint8)

    @cached_property
    def small(self) -> Pixels:
        return self._reduce(self.bgr)

    @cached_property
    def small_gray(self) -> Pixels:
        # Colour styles already have the reduced colour copy; gray styles never make it.
        if self.colour:
            return np.asarray(cv2.cvtColor(self.small, cv2.COLOR_BGR2GRAY), np.uint8)
        return self._reduce(self.gray)

    @cached_property
    def unit(self) -> float:
        """Length scale of the reduced copy relative to the one the constants were tuned on."""
        h, w = self.small_gray.shape[:2]
        return min(2.0, max(0.5, math.sqrt(h * w) / _REFERENCE_SIDE))

    def px(self, length: float) -> float:
        return length * self.unit

    def _reduce(self, image: Pixels) -> Pixels:
        if self.factor == 1:
            return image
        # fx/fy rather than a size: with an exact integer ratio OpenCV takes its fast box path.
        scale = 1.0 / self.factor
        out = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return np.asarray(out, np.uint8)

    def up(self, layer: Pixels) -> Pixels:
        if layer.shape[:2] == (self.height, self.width):
            return layer
        out = cv2.resize(layer, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        return np.asarray(out, np.uint8)


# --- shared building blocks ------------------------------------------------------------------


def _u8(values: npt.NDArray[np.floating]) -> Pixels:
    return np.asarray(np.clip(values, 0, 255) + 0.5, dtype=np.uint8)


def _blur(image: ImageT, sigma: float) -> ImageT:
    if sigma <= 0.1:
        return image
    blurred: ImageT = np.asarray(cv2.GaussianBlur(image, (0, 0), sigma), dtype=image.dtype)
    return blurred


@lru_cache(maxsize=64)
def _curve(gamma: float, floor: float = 0.0) -> Pixels:
    """LUT darkening lines: x ** gamma, then lifted so black never goes below ``floor``."""
    x = np.arange(256, dtype=np.float64) / 255.0
    y = floor + (1.0 - floor) * x**gamma
    lut = np.asarray(np.clip(y * 255.0 + 0.5, 0, 255), dtype=np.uint8)
    lut.setflags(write=False)
    return lut


@lru_cache(maxsize=64)
def _step(threshold: float, softness: float) -> Pixels:
    """LUT turning line values into ink: black below ``threshold``, white above, a narrow ramp."""
    x = np.arange(256, dtype=np.float64)
    y = np.clip((x - threshold) / max(softness, 1e-3) + 0.5, 0.0, 1.0) * 255.0
    lut = np.asarray(y + 0.5, dtype=np.uint8)
    lut.setflags(write=False)
    return lut


def _quantile(image: Pixels, fraction: float) -> int:
    """The smallest value with at least ``fraction`` of the pixels at or below it."""
    # Every k-th row is a fair sample and keeps a 12 MP histogram at ~1 ms instead of ~12.
    sample = image[:: max(1, image.shape[0] // 512)]
    hist = cv2.calcHist([sample], [0], None, [256], [0, 256]).ravel()
    cdf = np.cumsum(hist) / max(float(hist.sum()), 1.0)
    return min(255, int(np.searchsorted(cdf, fraction)))


@lru_cache(maxsize=64)
def _stretch(low: int, high: int) -> Pixels:
    """LUT spreading ``low``..``high`` over the full range (auto levels)."""
    # A narrow range is widened upwards first: a flat white picture must stay white, not be
    # stretched from "everything at the low end" to black.
    span = max(high - low, 64)
    low = min(low, 255 - span)
    x = np.arange(256, dtype=np.float64)
    lut = _u8((x - low) * 255.0 / span)
    lut.setflags(write=False)
    return lut


def _lines(canvas: _Canvas, sigma: float, gamma: float, floor: float = 0.0) -> Pixels:
    """Full-resolution dodge lines: each pixel against its local mean, white where flat.

    The local mean is blurred on the reduced copy and upsampled, which is both the expensive
    part made cheap and what keeps line width proportional to the picture.
    """
    # The offset keeps pure black areas white (0/0) and calms noise in deep shadows; the
    # mean's is added before upsampling, one full-size pass fewer.
    mean = _blur(canvas.small_gray, canvas.px(sigma))
    mean = canvas.up(np.asarray(cv2.convertScaleAbs(mean, alpha=1.0, beta=12.0), np.uint8))
    gray = np.asarray(cv2.convertScaleAbs(canvas.gray, alpha=1.0, beta=12.0), np.uint8)
    lines = cv2.divide(gray, mean, scale=255)
    return np.asarray(cv2.LUT(lines, _curve(round(gamma, 3), round(floor, 3))), np.uint8)


def _structure(gray_small: Pixels, sigma: float) -> Floats:
    """Edge strength in 0..1 of a (smoothed) reduced gray image, widened by ``sigma``."""
    gx = cv2.Sobel(gray_small, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray_small, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = _blur(np.asarray(cv2.magnitude(gx, gy), np.float32), sigma)
    # Every 3rd row is a fair sample for the 97th percentile, at a third of the sort.
    scale = float(np.percentile(magnitude[::3], 97)) if magnitude.size > 1 else 0.0
    if scale <= 1e-3:
        return np.zeros_like(magnitude)
    return np.asarray(np.clip(magnitude / scale, 0.0, 1.0), np.float32)


def _gate(canvas: _Canvas, lines: Pixels, strength: Floats) -> Pixels:
    """Keep full-resolution lines only where the smoothed image has structure.

    Texture that edge-preserving smoothing removed (skin pores, foliage, sensor noise) would
    otherwise come back as scribbles in the full-resolution line layer.
    """
    mask = canvas.up(_u8(np.sqrt(strength) * 255.0))
    ink = cv2.multiply(cv2.bitwise_not(lines), mask, scale=1.0 / 255.0)
    return np.asarray(cv2.bitwise_not(ink), np.uint8)


def _smooth(image: Pixels, canvas: _Canvas, passes: int = 2, sigma_color: float = 28.0) -> Pixels:
    """Edge-preserving smoothing of the reduced copy: repeated small bilateral passes.

    A 5-tap bilateral has a fast path in OpenCV (~5 ms per 0.75 MP colour pass); repeating it
    reaches further than one wide pass, which costs eight times as much.
    """
    out = image
    space = canvas.px(3.0)
    for _ in range(passes):
        out = np.asarray(cv2.bilateralFilter(out, 5, sigma_color, space), np.uint8)
    return out


def _periodic_blur(tile: Floats, sigma: float) -> Floats:
    pad = int(math.ceil(3 * sigma)) + 1
    padded = np.pad(tile, pad, mode="wrap")
    return np.asarray(_blur(padded, sigma), np.float32)[pad:-pad, pad:-pad]


def _normalised(tile: Floats) -> Floats:
    std = float(tile.std())
    out = (tile - float(tile.mean())) / (std if std > 1e-6 else 1.0)
    out = np.asarray(out, np.float32)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=64)
def _noise_tile(seed: int, sigma: float, size: int = 256) -> Floats:
    """Periodic smooth noise, zero mean and unit deviation: paper grain, tooth, granulation."""
    noise = np.random.default_rng(seed).standard_normal((size, size), dtype=np.float32)
    return _normalised(_periodic_blur(noise, sigma) if sigma > 0.1 else noise)


@lru_cache(maxsize=64)
def _stroke_tile(seed: int, angle: float, length: float, width: float, size: int = 256) -> Floats:
    """Periodic noise smeared along ``angle`` (degrees): parallel strokes of random weight."""
    noise = np.random.default_rng(seed).standard_normal((size, size), dtype=np.float32)
    noise = _periodic_blur(noise, width)
    half = max(1, round(length / 2))
    kernel = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    dx, dy = math.cos(math.radians(angle)), -math.sin(math.radians(angle))
    for i in range(-half, half + 1):
        # A soft line kernel: each tap weighted by a taper so stroke ends fade out.
        weight = 1.0 - abs(i) / (half + 1)
        kernel[round(half + i * dy), round(half + i * dx)] += weight
    kernel /= kernel.sum()
    pad = 2 * half + 2
    padded = np.pad(noise, pad, mode="wrap")
    smeared = cv2.filter2D(padded, cv2.CV_32F, kernel, borderType=cv2.BORDER_REFLECT)
    return _normalised(np.asarray(smeared, np.float32)[pad:-pad, pad:-pad])


def _tiled(tile: Floats, shape: tuple[int, int]) -> Floats:
    h, w = shape
    th, tw = tile.shape
    reps = (-(-h // th), -(-w // tw))
    return np.asarray(np.tile(tile, reps)[:h, :w], np.float32)


def _grain(canvas: _Canvas, shape: tuple[int, int], what: str, sigma: float) -> Floats:
    # Below a pixel, grain reads as sensor noise rather than paper.
    sigma = max(1.0, canvas.px(sigma))
    return _tiled(_noise_tile(canvas.seed(what), round(sigma, 1)), shape)


def _strokes(
    canvas: _Canvas, shape: tuple[int, int], what: str, angle: float, length: float, width: float
) -> Floats:
    tile = _stroke_tile(
        canvas.seed(what), angle, round(canvas.px(length), 1), round(canvas.px(width), 1)
    )
    return _tiled(tile, shape)


def _mono(canvas: _Canvas, tone: Floats, lines: Pixels) -> Pixels:
    """Combine a reduced tone layer (0..255 floats) with full-resolution lines."""
    return np.asarray(cv2.multiply(canvas.up(_u8(tone)), lines, scale=1.0 / 255.0), np.uint8)


def _colour(canvas: _Canvas, paint: Pixels, lines: Pixels | None) -> Pixels:
    """Upsample a reduced colour layer and darken it with full-resolution lines."""
    full = canvas.up(paint)
    if lines is None:
        return full
    if full is paint:
        full = full.copy()
    lines3 = cv2.cvtColor(lines, cv2.COLOR_GRAY2BGR)
    # In place: a 12 MP colour buffer fewer to allocate (and page in) per render.
    cv2.multiply(full, lines3, dst=full, scale=1.0 / 255.0)
    return full


def _saturate(bgr: Pixels, gain: float, contrast: float = 1.0) -> Pixels:
    """Scale saturation by ``gain`` and stretch value around mid-gray by ``contrast``."""
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    x = np.arange(256, dtype=np.float32)
    s_lut = _u8(x * gain)
    v_lut = _u8((x - 128.0) * contrast + 128.0)
    h, s, v = cv2.split(hsv)
    merged = cv2.merge([h, cv2.LUT(s, s_lut), cv2.LUT(v, v_lut)])
    return np.asarray(cv2.cvtColor(merged, cv2.COLOR_HSV2BGR), np.uint8)


@lru_cache(maxsize=1)
def _lab_bins() -> Floats:
    """Lab of the centre of each of the 16³ BGR bins the palette lookup table is indexed by."""
    grid = (np.arange(16, dtype=np.float32) * 16 + 8).astype(np.uint8)
    b, g, r = np.meshgrid(grid, grid, grid, indexing="ij")
    bins = np.stack([b, g, r], axis=-1).reshape(-1, 1, 3)
    lab = np.asarray(cv2.cvtColor(bins, cv2.COLOR_BGR2Lab).reshape(-1, 3), np.float32)
    lab.setflags(write=False)
    return lab


def _nearest(points: Floats, centres: Floats) -> npt.NDArray[np.intp]:
    """Index of the nearest centre per point: |p|² is the same for every centre, so the
    argmin of |c|² - 2 p·c needs one matrix product and no N×k×3 difference array."""
    scores = points @ (-2.0 * centres.T) + (centres * centres).sum(axis=1)[None, :]
    return np.asarray(scores.argmin(axis=1))


def _palette(bgr: Pixels, colours: int) -> tuple[Pixels, Pixels]:
    """A small k-means palette in Lab, learnt on a fixed grid of ~2000 samples.

    Deterministic: centres start at luminance quantiles, not at random. Returns the palette
    colour of every pixel (through a 16³ lookup table, so a pixel costs one table read) and
    the palette itself as BGR.
    """
    h, w = bgr.shape[:2]
    step = max(1, int(math.sqrt(h * w / 2000)))
    samples = np.asarray(
        cv2.cvtColor(bgr[::step, ::step], cv2.COLOR_BGR2Lab).reshape(-1, 3), np.float32
    )
    k = max(1, min(colours, len(samples)))
    order = np.argsort(samples[:, 0], kind="stable")
    centres = samples[order[np.linspace(0, len(order) - 1, k).astype(int)]].copy()
    for _ in range(6):
        labels = _nearest(samples, centres)
        counts = np.bincount(labels, minlength=k).astype(np.float32)
        for channel in range(3):
            sums = np.bincount(labels, weights=samples[:, channel], minlength=k)
            # An emptied cluster keeps its old centre rather than collapsing to zero.
            centres[:, channel] = np.where(
                counts > 0, sums / np.maximum(counts, 1), centres[:, channel]
            )
    lut = np.asarray(_nearest(_lab_bins(), centres), np.uint8)
    centres_bgr = cv2.cvtColor(_u8(centres).reshape(-1, 1, 3), cv2.COLOR_Lab2BGR).reshape(-1, 3)
    # The index is built in uint16 on a half-size copy: region colours are blended and
    # median-filtered afterwards, so a linear upsample of the lookup is indistinguishable.
    half = np.asarray(
        cv2.resize(bgr, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA), np.uint8
    )
    four = half >> np.uint8(4)
    index = (four[:, :, 0].astype(np.uint16) << 8) | (four[:, :, 1].astype(np.uint16) << 4)
    index |= four[:, :, 2]
    regions = np.ascontiguousarray(centres_bgr[lut[index]], np.uint8)
    full = cv2.resize(regions, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.asarray(full, np.uint8), np.asarray(centres_bgr, np.uint8)


def _orientation_bins(gray_small: Pixels, sigma: float) -> Pixels:
    """Per pixel, which of four directions (0°, 45°, 90°, 135°) runs along the structure."""
    g = gray_small.astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    # Box windows: the orientation only needs a neighbourhood average, and boxes are cheap.
    size = (2 * round(sigma) + 1, 2 * round(sigma) + 1)
    jxx = np.asarray(cv2.blur(gx * gx, size), np.float32)
    jyy = np.asarray(cv2.blur(gy * gy, size), np.float32)
    jxy = np.asarray(cv2.blur(gx * gy, size), np.float32)
    # The structure tensor's gradient angle is atan2(b, a) / 2; strokes run perpendicular to
    # it. With four bins only the quadrant of (a, b) matters, so no arctangent is needed.
    # In uint8 and bool arithmetic: a quarter of the memory traffic of int64 np.where.
    a, b = jxx - jyy, 2.0 * jxy
    along = np.abs(a) >= np.abs(b)
    # Along: 2 where a >= 0, else 0; across: 3 where b > 0, else 1.
    bins = np.where(along, (a >= 0).view(np.uint8) * np.uint8(2), np.uint8(1)).astype(np.uint8)
    bins += (~along).view(np.uint8) * (b > 0).view(np.uint8) * np.uint8(2)
    return bins


def _line_kernel(angle: float, length: float) -> Floats:
    half = max(1, round(length / 2))
    kernel = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    dx, dy = math.cos(angle), math.sin(angle)
    for i in range(-half, half + 1):
        kernel[round(half + i * dy), round(half + i * dx)] += 1.0
    return np.asarray(kernel / kernel.sum(), np.float32)


def _brush(image: Pixels, bins: Pixels, length: float) -> Pixels:
    """Smear ``image`` along the local direction: short strokes that follow the shapes."""
    # OpenCV switches to a DFT above ~11×11 kernels, several times slower here; two passes of
    # a shorter line give the same reach with a softer, more brush-like profile.
    passes = 1 if length <= 9 else 2
    kernel_length = length / passes
    out = image.copy()
    for i in range(4):
        mask = (bins == i).view(np.uint8)
        if not cv2.countNonZero(mask):
            continue
        smeared = image
        for _ in range(passes):
            kernel = _line_kernel(i * math.pi / 4, kernel_length)
            smeared = np.asarray(cv2.filter2D(smeared, -1, kernel), np.uint8)
        # A masked copy in place: no full-size temporary per direction.
        cv2.copyTo(smeared, mask, out)
    return out


def _emboss(height: Floats, strength: float) -> Floats:
    """Light from the upper left on a height field: 1 ± ``strength`` for impasto relief."""
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3)
    return np.asarray(1.0 - strength * (gx + gy) / 8.0, np.float32)


# --- the styles ------------------------------------------------------------------------------


def _oriented_strokes(
    c: _Canvas,
    shape: tuple[int, int],
    bins: Pixels,
    what: str,
    length: float,
    width: float,
) -> Floats:
    """Stroke texture whose strokes run along the local structure (one tile per direction)."""
    # _strokes measures angles counter-clockwise with y up; the bins run clockwise, y down.
    fields = [_strokes(c, shape, f"{what}-{i}", -45.0 * i, length, width) for i in range(4)]
    out = np.where(bins == 0, fields[0], np.where(bins == 1, fields[1], fields[2]))
    return np.asarray(np.where(bins == 3, fields[3], out), np.float32)


def _darkness(gray: Pixels, canvas: _Canvas, sigma: float) -> Floats:
    """1 - blurred gray / 255, clamped to 0..1 before anyone raises it to a power.

    A float32 blur of pure white can come out a hair above 255; unclamped, ``1 - x`` is then
    a tiny negative number whose fractional power is NaN, and NaN casts to black.
    """
    blurred = np.asarray(_blur(gray.astype(np.float32), canvas.px(sigma)), np.float32)
    return np.asarray(np.clip(1.0 - blurred / 255.0, 0.0, 1.0), np.float32)


def _pencil(c: _Canvas, method: str, t: float) -> Pixels:
    g = c.small_gray if method == "basic" else _smooth(c.small_gray, c, passes=2)
    lines = _lines(c, sigma=1.6, gamma=1.5 + 3.0 * t, floor=0.12)
    if method == "advanced":
        lines = _gate(c, lines, _structure(g, c.px(1.5)))
    shape = g.shape[:2]
    dark = _darkness(g, c, 1.0)
    paper = 1.0 - 0.03 * np.clip(_grain(c, shape, "paper", 1.2), -2, 2)
    if method == "basic":
        shade = dark * (0.08 + 0.28 * t)
    elif method == "advanced":
        # Shading laid with the side of the lead: soft parallel strokes, darker where darker.
        side = _strokes(c, shape, "side", 50.0, 14.0, 0.7)
        shade = dark**1.2 * (0.22 + 0.5 * t) * np.clip(1.0 + 0.25 * side, 0.4, 1.6)
    else:
        hatch = _strokes(c, shape, "hatch", 40.0, 26.0, 0.6)
        cross = _strokes(c, shape, "cross", -50.0, 26.0, 0.6)
        level = 0.3 + 0.55 * t
        shade = dark * level * np.clip(0.5 + 0.55 * hatch, 0, 2)
        # Cross-hatching only in the darker half, as a draughtsman builds up shadows.
        shade += np.clip(dark - 0.4, 0, 1) * level * 1.4 * np.clip(0.4 + 0.6 * cross, 0, 2)
    tone = 255.0 * np.clip(1.0 - shade, 0, 1) * paper
    return _mono(c, tone, lines)


def _charcoal(c: _Canvas, method: str, t: float) -> Pixels:
    g = c.small_gray
    shape = g.shape[:2]
    if method == "basic":
        # Vine charcoal rubbed in with a finger: soft tone, soft edges, a faint soft grain.
        dark = _darkness(g, c, 3.0)
        cover = np.clip((dark - 0.06) / 0.85, 0, 1) ** (1.2 - 0.4 * t) * (0.72 + 0.2 * t)
        grain = _grain(c, shape, "grain", 3.0)
        amount = 0.12
        lines = _lines(c, sigma=3.0, gamma=1.2 + 1.5 * t, floor=0.4)
    elif method == "advanced":
        # Compressed charcoal: deep velvety blacks and crisp contrast.
        g = _smooth(g, c, passes=2, sigma_color=35.0)
        g = np.asarray(cv2.createCLAHE(clipLimit=2.0, tileGridSize=(6, 6)).apply(g), np.uint8)
        dark = _darkness(g, c, 1.2)
        cover = np.clip((dark - 0.12) / 0.7, 0, 1) ** (0.8 - 0.3 * t) * (0.92 + 0.08 * t)
        grain = _grain(c, shape, "grain", 1.4)
        amount = 0.2
        lines = _lines(c, sigma=2.6, gamma=2.0 + 2.5 * t, floor=0.05)
    else:
        # Strokes: the tone dragged along the forms with the side of the stick, then smudged.
        g = _smooth(g, c, passes=2, sigma_color=35.0)
        bins = _orientation_bins(g, c.px(4.0))
        g = _brush(g, bins, c.px(18.0))
        dark = _darkness(g, c, 1.0)
        cover = np.clip((dark - 0.08) / 0.8, 0, 1) ** (1.0 - 0.4 * t) * (0.85 + 0.15 * t)
        # The hatching of the stick's side keeps one direction, as a hand does.
        strokes = _strokes(c, shape, "smear", 25.0, 34.0, 1.6)
        grain = 0.3 * _grain(c, shape, "grain", 1.6) + 0.8 * strokes
        amount = 0.45
        lines = _lines(c, sigma=2.0, gamma=1.0 + 1.5 * t, floor=0.45)
    # Charcoal catches on the paper's ridges: the grain shows in the half-tones, while full
    # blacks and bare paper stay clean.
    cover = np.clip(cover + (0.03 + 1.3 * cover * (1.0 - cover)) * amount * grain, 0, 1)
    tone = 250.0 - 228.0 * cover
    return _mono(c, tone, lines)


def _ink(c: _Canvas, method: str, t: float) -> Pixels:
    g = c.small_gray if method == "basic" else _smooth(c.small_gray, c, passes=3)
    lines = _lines(c, sigma=1.4, gamma=1.0)
    if method != "basic":
        lines = _gate(c, lines, _structure(g, c.px(1.0)))
    # The threshold follows the picture's own contrast, so a soft photo still gets lines;
    # higher intensity lets fainter edges become ink as well.
    share = _quantile(lines, 0.03 + 0.08 * t)
    # Every bound rises with t, so ink coverage does too; 250 keeps flat areas pure white.
    threshold = round(min(240.0 + 10.0 * t, max(200.0 + 30.0 * t, share)), 1)
    ink = np.asarray(cv2.LUT(lines, _step(threshold, 10.0)), np.uint8)
    if method == "basic":
        return ink
    levels = _stretch(_quantile(g, 0.02), _quantile(g, 0.98))
    tone = c.up(_blur(np.asarray(cv2.LUT(g, levels), np.uint8), c.px(1.0)))
    # Spot blacks: the darkest masses filled solid, as an inker would.
    _, solid = cv2.threshold(tone, 20 + 30 * t, 255, cv2.THRESH_BINARY)
    ink = np.asarray(cv2.min(ink, solid), np.uint8)
    if method == "advanced":
        return ink
    period = max(6, round(c.px(12.0) * c.factor))
    for angle, start in ((45, 175.0), (-45, 110.0)):
        screen = _hatch_screen(period, angle, c.height, c.width)
        # Line-screen hatching: a hatch line's width grows with the darkness under it, so the
        # hatching stays crisp black and white at any size.
        width = cv2.LUT(tone, _hatch_width(start + 40.0 * t))
        hatch = cv2.compare(screen, width, cv2.CMP_GE)
        ink = np.asarray(cv2.min(ink, hatch), np.uint8)
    return np.asarray(ink, np.uint8)


@lru_cache(maxsize=16)
def _hatch_width(start: float) -> Pixels:
    """Tone → hatch line half-width on the screen's 0..255 scale; zero above ``start``."""
    x = np.arange(256, dtype=np.float64)
    lut = _u8(np.clip((start - x) / max(start, 1.0), 0, 1) * 130.0)
    lut.setflags(write=False)
    return lut


@lru_cache(maxsize=16)
def _hatch_tile(period: int, angle: int) -> Pixels:
    size = period * max(1, 256 // period)
    y, x = np.mgrid[0:size, 0:size]
    phase = ((x + y) if angle > 0 else (x - y)) % period
    # A triangle wave: 0 on a hatch line's centre, 255 half a period away.
    out = _u8(np.abs(phase / period * 2.0 - 1.0) * 255.0)
    out.setflags(write=False)
    return out


def _hatch_screen(period: int, angle: int, height: int, width: int) -> Pixels:
    tile = _hatch_tile(period, angle)
    th, tw = tile.shape
    reps = (-(-height // th), -(-width // tw))
    return np.ascontiguousarray(np.tile(tile, reps)[:height, :width])


_PAPER = np.array([246.0, 250.0, 253.0], np.float32)  # a warm white (BGR)


def _glazes(bgr: Pixels, levels: int) -> Pixels:
    """Tone built up in a few transparent layers: luminance pulled towards ``levels`` steps."""
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32) + 1.0
    steps = np.round(gray / 256.0 * levels) / levels * 256.0
    # Keep half of the gradation inside each step, so a face is not cut into bands.
    target = steps + (gray - steps) * 0.55
    return _u8(bgr.astype(np.float32) * np.clip(target / gray, 0.0, 4.0)[..., None])


@lru_cache(maxsize=4)
def _mesh(shape: tuple[int, int]) -> tuple[Floats, Floats]:
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


def _watercolor(c: _Canvas, method: str, t: float) -> Pixels:
    base = c.small
    shape = base.shape[:2]
    lines: Pixels | None = None
    if method == "basic":
        # Wet in wet: one pale, soft wash, the colours running into each other.
        wash = _blur(np.asarray(cv2.medianBlur(base, 5), np.uint8), c.px(2.5))
        strength, rim_gain = 0.5 + 0.25 * t, 0.3
        lines = _lines(c, sigma=1.6, gamma=0.7, floor=0.72)
    elif method == "advanced":
        # Glazes: the tones laid in a few transparent layers, each drying with a darker rim.
        wash = np.asarray(cv2.medianBlur(_smooth(base, c, passes=3, sigma_color=40.0), 5))
        wash = _glazes(_saturate(wash, 1.3), 5)
        strength, rim_gain = 0.85 + 0.15 * t, 0.18
    else:
        # Line and wash: pen lines over a loose wash that bleeds past them.
        wash = _blur(_smooth(base, c, passes=2, sigma_color=40.0), c.px(1.5))
        dx = _grain(c, shape, "bleed-x", 5.0) * c.px(1.6)
        dy = _grain(c, shape, "bleed-y", 5.0) * c.px(1.6)
        xs, ys = _mesh(shape)
        wash = np.asarray(
            cv2.remap(wash, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT),
            np.uint8,
        )
        wash = _saturate(wash, 1.35)
        strength, rim_gain = 0.7 + 0.2 * t, 0.45
        ink = _lines(c, sigma=1.4, gamma=1.0)
        pen = _step(round(215.0 + 15.0 * t, 1), 24.0).astype(np.float32) * 0.85 + 38.0
        lines = np.asarray(cv2.LUT(ink, pen.astype(np.uint8)), np.uint8)
        # Only where the smoothed picture has edges: no pen specks in flat shadows.
        wash_edges = np.asarray(cv2.cvtColor(wash, cv2.COLOR_BGR2GRAY), np.uint8)
        lines = _gate(c, lines, _structure(wash_edges, c.px(1.0)))
    absorb = (255.0 - wash.astype(np.float32)) / 255.0
    # Edge darkening: water carries pigment to the rim of each wash as it dries.
    wash_gray = cv2.cvtColor(wash, cv2.COLOR_BGR2GRAY).astype(np.float32)
    rim = np.abs(wash_gray - np.asarray(_blur(wash_gray, c.px(2.5)), np.float32))
    modulation = 1.0 + np.clip(rim / 14.0, 0, 1) * rim_gain
    # Pigment settles unevenly: large soft blooms, no fine speckle (that reads as dirt).
    modulation *= 1.0 + 0.05 * np.clip(_grain(c, shape, "bloom", 14.0), -2.5, 2.5)
    if method == "artistic":
        # Highlights are left as bare paper, as a painter saves the white.
        dark = (255.0 - wash_gray) / 255.0
        modulation *= np.clip((dark - 0.12) / 0.2, 0, 1)
    absorb *= (strength * modulation)[..., None]
    paint = _u8(_PAPER * (1.0 - np.clip(absorb, 0, 1)))
    return _colour(c, paint, lines)


def _pastel(c: _Canvas, method: str, t: float) -> Pixels:
    base = c.small
    shape = base.shape[:2]
    # Chalk skips the paper's tooth only where the picture has structure; flat areas are
    # blended smooth with a finger, so they stay clean instead of mottled.
    detail = _structure(c.small_gray, c.px(2.0))
    tooth = np.clip(_grain(c, shape, "tooth", 1.0), 0, 3)
    lines: Pixels | None
    if method == "basic":
        # Soft pastel, blended: light tints with softened edges.
        chalk = _saturate(_blur(np.asarray(cv2.medianBlur(base, 5)), c.px(2.0)), 1.25)
        tint, gaps = 0.5 - 0.2 * t, 0.45 * tooth * detail
        lines = _lines(c, sigma=1.8, gamma=0.8, floor=0.7)
    elif method == "advanced":
        # Oil pastel: saturated, waxy, opaque colour with firm dark contours.
        smooth = np.asarray(
            cv2.medianBlur(_smooth(base, c, passes=3, sigma_color=35.0), 5), np.uint8
        )
        chalk = _saturate(smooth, 1.45 + 0.3 * t, 1.2)
        tint, gaps = 0.0, 0.25 * tooth * detail
        lines = _lines(c, sigma=1.6, gamma=1.6 + 1.5 * t, floor=0.2)
    else:
        # Chalk strokes laid along the forms, the paper showing between them.
        smooth = _smooth(base, c, passes=2, sigma_color=30.0)
        bins = _orientation_bins(c.small_gray, c.px(4.0))
        chalk = _saturate(_brush(smooth, bins, c.px(9.0)), 1.3 + 0.3 * t)
        strokes = np.clip(_oriented_strokes(c, shape, bins, "chalk", 26.0, 1.0), 0, 3)
        tint = 0.18 - 0.08 * t
        gaps = (0.35 * strokes + 0.25 * tooth) * np.clip(1.5 * detail, 0, 1)
        lines = _lines(c, sigma=1.8, gamma=0.9, floor=0.6)
    chalk_f = chalk.astype(np.float32) * (1.0 - tint) + 255.0 * tint
    # Where the chalk skips, the (lighter) paper shows: the texture lightens, never greys.
    paper = np.array([232.0, 241.0, 248.0], np.float32)
    show = np.clip(gaps, 0, 0.9)[..., None]
    paint = _u8(chalk_f + (np.maximum(paper, chalk_f) - chalk_f) * show)
    return _colour(c, paint, lines)


def _kuwahara(image: Pixels, radius: float) -> Pixels:
    """Each pixel takes the mean of its least varied quadrant: flat, brushy patches whose
    borders follow the picture's edges.

    One box filter per statistic gives every quadrant: the mean over the box right-below a
    pixel, read r pixels up and/or left, is the mean over the box above/left of it.
    """
    r = max(1, round(radius))
    size = (r + 1, r + 1)
    height, width = image.shape[:2]
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)

    def boxes(values: ImageT) -> ImageT:
        mean = cv2.boxFilter(values, -1, size, anchor=(0, 0), borderType=cv2.BORDER_REFLECT)
        padded: ImageT = np.asarray(
            cv2.copyMakeBorder(mean, r, 0, r, 0, cv2.BORDER_REPLICATE), values.dtype
        )
        return padded

    means, m, m2 = boxes(image), boxes(gray), boxes(gray * gray)
    out = np.empty_like(image)
    best = np.empty_like(gray)
    for i, (dy, dx) in enumerate(((0, 0), (0, r), (r, 0), (r, r))):
        rows, cols = slice(r - dy, r - dy + height), slice(r - dx, r - dx + width)
        mean_gray = m[rows, cols]
        var = cv2.subtract(m2[rows, cols], cv2.multiply(mean_gray, mean_gray))
        if i == 0:
            out[:] = means[rows, cols]
            best[:] = var
            continue
        # OpenCV rather than numpy: masked copies of strided views are several times faster.
        better = cv2.compare(var, best, cv2.CMP_LT)
        cv2.copyTo(means[rows, cols], better, out)
        cv2.min(var, best, dst=best)
    return out


@lru_cache(maxsize=16)
def _glaze_lut(t: float) -> Pixels:
    """A warm old-master glaze: mid-tones and shadows deepen, blue most; white stays white."""
    x = np.arange(256, dtype=np.float64) / 255.0
    gammas = (2.6 + 0.3 * t, 2.0 + 0.2 * t, 1.5 + 0.1 * t)  # B, G, R
    lut = np.stack([_u8(255.0 * x**gamma) for gamma in gammas], axis=-1).reshape(256, 1, 3)
    lut = np.ascontiguousarray(lut)
    lut.setflags(write=False)
    return lut


def _lit(c: _Canvas, paint: Pixels, shading: Floats) -> Pixels:
    """Relief lighting on the paint. It fades out on near-white (a white background is bare
    primed canvas and must stay white) and thins on smooth areas such as skin, where a
    painter blends rather than leaves ridges."""
    light = cv2.cvtColor(paint, cv2.COLOR_BGR2GRAY)
    detail = _structure(np.asarray(light, np.uint8), c.px(3.0))
    depth = np.clip((250.0 - light.astype(np.float32)) / 60.0, 0.1, 1.0) * (0.55 + 0.45 * detail)
    return _u8(paint.astype(np.float32) * (1.0 + (shading - 1.0) * depth)[..., None])


def _oil(c: _Canvas, method: str, t: float) -> Pixels:
    base = c.small
    bins = _orientation_bins(c.small_gray, c.px(4.0))
    if method == "basic":
        # Alla prima: flat, brushy patches of the picture's own colours.
        paint = _saturate(_kuwahara(base, c.px(5.0)), 0.85 + 0.3 * t, 0.92)
        length, relief = 8.0, 0.18
    elif method == "advanced":
        # Chiaroscuro: smoothed, glazed warm, with deep shadows and light kept in highlights.
        paint = _kuwahara(_smooth(base, c, passes=2, sigma_color=35.0), c.px(6.0))
        paint = _saturate(paint, 0.8 + 0.6 * t, 1.05)
        paint = np.asarray(cv2.LUT(paint, _glaze_lut(t)), np.uint8)
        length, relief = 12.0, 0.22
    else:
        # Impasto: thick strokes dragged along the forms, strong colour and strong relief.
        paint = _kuwahara(_smooth(base, c, passes=2, sigma_color=35.0), c.px(6.0))
        paint = _saturate(_brush(paint, bins, c.px(16.0)), 1.6 + 0.6 * t, 1.3)
        length, relief = 14.0, 0.45
    shape = paint.shape[:2]
    # A height field of short strokes that follow the shapes, lit from the upper left.
    height = _oriented_strokes(c, shape, bins, "impasto", length, 1.0)
    shading = np.clip(_emboss(height, relief), 0.8, 1.2)
    if method == "artistic":
        shading *= 1.0 + 0.03 * _grain(c, shape, "weave", 1.0)
    return _colour(c, _lit(c, paint, shading), None)


def _acrylic(c: _Canvas, method: str, t: float) -> Pixels:
    base = np.asarray(cv2.medianBlur(_smooth(c.small, c, passes=2, sigma_color=40.0), 5), np.uint8)
    shape = base.shape[:2]
    regions, _ = _palette(base, 12)
    if method == "basic":
        # Matte, opaque colour: shapes pulled towards a palette, shading kept inside them.
        flat = cv2.addWeighted(base, 0.45, regions, 0.55, 0.0)
        paint = _saturate(np.asarray(cv2.medianBlur(flat, 5)), 1.2 + 0.5 * t)
        # Mixed with white, as matte acrylic often is: a lighter, softer key.
        paint = np.asarray(cv2.addWeighted(paint, 0.75, paint, 0.0, 64.0), np.uint8)
        lines = _lines(c, sigma=1.5, gamma=1.0)
        lift = (_step(215.0, 18.0).astype(np.float32) * 0.6 + 102.0).astype(np.uint8)
    elif method == "advanced":
        # Hard edge: bold mixed colours in crisp shapes, strong dark contours.
        flat = cv2.addWeighted(base, 0.35, regions, 0.65, 0.0)
        flat = _kuwahara(np.asarray(flat, np.uint8), c.px(3.0))
        paint = _saturate(flat, 1.6 + 0.4 * t, 1.4)
        lines = _lines(c, sigma=1.5, gamma=1.0)
        lift = (_step(222.0, 14.0).astype(np.float32) * 0.85 + 38.0).astype(np.uint8)
    else:
        # Palette knife: the paint dragged along the forms, bristle marks and ridges.
        bins = _orientation_bins(c.small_gray, c.px(4.0))
        flat = cv2.addWeighted(base, 0.5, regions, 0.5, 0.0)
        paint = _saturate(_brush(np.asarray(flat, np.uint8), bins, c.px(14.0)), 0.9 + 0.3 * t, 0.9)
        bristles = _oriented_strokes(c, shape, bins, "bristles", 20.0, 0.6)
        shading = np.clip(_emboss(bristles, 0.45), 0.8, 1.2) * (1.0 + 0.05 * bristles)
        paint = _lit(c, paint, shading)
        lines = _lines(c, sigma=1.5, gamma=1.0)
        lift = (_step(205.0, 24.0).astype(np.float32) * 0.5 + 128.0).astype(np.uint8)
    # Outlines as an inked edge, not a soft shadow: thresholded, then kept a little gray.
    outline = np.asarray(cv2.LUT(lines, lift), np.uint8)
    return _colour(c, paint, outline)


_RENDERERS: dict[str, Callable[[_Canvas, str, float], Pixels]] = {
    "pencil": _pencil,
    "charcoal": _charcoal,
    "watercolor": _watercolor,
    "ink": _ink,
    "pastel": _pastel,
    "oil": _oil,
    "acrylic": _acrylic,
}
