"""The sketch engine on real photographs: shapes, looks, intensity, determinism, odd inputs,
decoding, encoding and the gallery helpers. Pure: no database, storage or server.

The photographs are scikit-image sample photos kept small in ``tests/data`` (see its README)
plus the bundled preview sample.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import subprocess
import sys
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from backend.sketches.gallery import SAMPLE, contact_sheet, preview
from backend.sketches.styles import (
    FORMATS,
    METHODS,
    STYLES,
    SketchParams,
    UnknownMethod,
    UnknownStyle,
    default_format,
    encode,
    load,
    output_format,
    render,
    sketch_bytes,
)

Pixels = npt.NDArray[np.uint8]

DATA = Path(__file__).resolve().parents[1] / "data"
REPO = Path(__file__).resolve().parents[2]
PHOTOS = {
    "coffee": DATA / "coffee.jpg",
    "chelsea": DATA / "chelsea.jpg",
    "astronaut": SAMPLE,
}
COMBINATIONS = [(style, method) for style in STYLES for method in METHODS]
GRAY_STYLES = [s.id for s in STYLES.values() if s.grayscale]

# Thresholds on the mean absolute difference (gray levels, 0-255) between two results turned
# gray and shrunk to 128×128. For scale: re-encoding these photos as JPEG at quality 75, a
# change nobody calls a different picture, moves it by 0.5-0.7. Distinct styles measured 9-12
# apart at worst (oil vs acrylic, both painted colour) and every style 9+ from the photo, so 6
# is ~10× the invisible-change level with room below the closest pair; methods are variations
# on one look and measured 5+ apart, so 2.5 (~4× the JPEG level) asks for a visible change.
STYLE_GAP = 6.0
METHOD_GAP = 2.5


@cache
def photo_bytes(name: str) -> bytes:
    return PHOTOS[name].read_bytes()


@cache
def photo(name: str, side: int = 400) -> Pixels:
    return load(photo_bytes(name), max_side=side)


def as_gray(image: Pixels, size: tuple[int, int] = (128, 128)) -> npt.NDArray[np.float32]:
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return np.asarray(small, np.float32)


def mad(a: Pixels, b: Pixels) -> float:
    return float(np.abs(as_gray(a) - as_gray(b)).mean())


def tone(image: Pixels) -> float:
    """Mean darkness for gray styles, mean HSV saturation for colour ones."""
    if image.ndim == 2:
        return 255.0 - float(image.mean())
    return float(cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[:, :, 1].mean())


# --- catalogue and parameters ----------------------------------------------------------------


def test_catalogue_names_and_order() -> None:
    assert list(STYLES) == [
        "pencil",
        "charcoal",
        "watercolor",
        "ink",
        "pastel",
        "oil",
        "acrylic",
    ]
    assert list(METHODS) == ["basic", "advanced", "artistic"]
    assert GRAY_STYLES == ["pencil", "charcoal", "ink"]
    assert FORMATS == ("png", "jpeg", "webp")
    for key, style in STYLES.items():
        assert (style.id, bool(style.name), bool(style.description)) == (key, True, True)
    for key, method in METHODS.items():
        assert (method.id, bool(method.name), bool(method.description)) == (key, True, True)


def test_params_defaults_and_bounds() -> None:
    assert SketchParams() == SketchParams(intensity=0.5, max_side=2048, format=None)
    # Left out, the format follows the style: lossless PNG for gray, JPEG for colour.
    assert [output_format(s, SketchParams()) for s in STYLES] == [
        "png",
        "png",
        "jpeg",
        "png",
        "jpeg",
        "jpeg",
        "jpeg",
    ]
    assert output_format("oil", SketchParams(format="png")) == "png"
    assert default_format("pencil") == "png"
    for ok in (
        SketchParams(intensity=0),
        SketchParams(intensity=1.0),
        SketchParams(max_side=256),
        SketchParams(max_side=8192),
        SketchParams(format="webp"),
    ):
        assert ok.format in (*FORMATS, None)


@pytest.mark.parametrize(
    ("kwargs", "mentions"),
    [
        ({"intensity": -0.01}, "intensity"),
        ({"intensity": 1.01}, "intensity"),
        ({"intensity": float("nan")}, "intensity"),
        ({"intensity": "0.5"}, "intensity"),
        ({"intensity": True}, "intensity"),
        ({"max_side": 255}, "max_side"),
        ({"max_side": 8193}, "max_side"),
        ({"max_side": 1024.0}, "max_side"),
        ({"format": "gif"}, "format"),
        ({"format": "PNG"}, "format"),
    ],
)
def test_params_refuse_bad_values(kwargs: dict[str, object], mentions: str) -> None:
    with pytest.raises(ValueError, match=mentions):
        SketchParams(**kwargs)  # type: ignore[arg-type]


def test_unknown_style_and_method() -> None:
    image = photo("chelsea", 64)
    with pytest.raises(UnknownStyle, match="crayon"):
        render(image, "crayon", "basic")
    with pytest.raises(UnknownMethod, match="quick"):
        render(image, "pencil", "quick")
    assert issubclass(UnknownStyle, ValueError)
    assert issubclass(UnknownMethod, ValueError)


# --- every combination -----------------------------------------------------------------------


@pytest.mark.parametrize(("style", "method"), COMBINATIONS)
def test_combination_keeps_size_and_channels(style: str, method: str) -> None:
    image = photo("coffee")
    out = render(image, style, method)
    assert out.dtype == np.uint8
    assert out.shape[:2] == image.shape[:2]
    if STYLES[style].grayscale:
        assert out.ndim == 2
    else:
        assert out.ndim == 3
        assert out.shape[2] == 3
    # Not blank: a drawing has both light and dark.
    assert int(out.max()) - int(out.min()) > 100


@pytest.mark.parametrize("name", list(PHOTOS))
def test_styles_differ_from_each_other_and_from_the_photo(name: str) -> None:
    image = photo(name)
    for method in METHODS:
        drawn = {style: render(image, style, method) for style in STYLES}
        for a, b in itertools.combinations(STYLES, 2):
            assert mad(drawn[a], drawn[b]) > STYLE_GAP, (name, method, a, b)
        for style, out in drawn.items():
            assert mad(out, image) > STYLE_GAP, (name, method, style)


@pytest.mark.parametrize("name", list(PHOTOS))
def test_methods_differ_within_a_style(name: str) -> None:
    image = photo(name)
    for style in STYLES:
        drawn = {method: render(image, style, method) for method in METHODS}
        for a, b in itertools.combinations(METHODS, 2):
            assert mad(drawn[a], drawn[b]) > METHOD_GAP, (name, style, a, b)


@pytest.mark.parametrize(("style", "method"), COMBINATIONS)
def test_intensity_is_monotonic(style: str, method: str) -> None:
    for name in ("coffee", "chelsea"):
        image = photo(name, 300)
        tones = [
            tone(render(image, style, method, SketchParams(intensity=t)))
            for t in (0.0, 0.25, 0.5, 0.75, 1.0)
        ]
        steps = np.diff(tones)
        assert (steps > 0).all(), (name, [round(v, 2) for v in tones])
        # And the whole range is a visible change, not rounding noise.
        assert tones[-1] - tones[0] > 5.0, (name, tones)


def test_render_is_deterministic_in_process() -> None:
    image = photo("astronaut", 256)
    for style, method in COMBINATIONS:
        first = render(image, style, method)
        second = render(image.copy(), style, method)
        assert first.tobytes() == second.tobytes(), (style, method)


_DIGEST_SCRIPT = """
import hashlib, sys
from backend.sketches.styles import METHODS, STYLES, load, render
image = load(open(sys.argv[1], "rb").read(), max_side=256)
digest = hashlib.sha256()
for style in STYLES:
    for method in METHODS:
        digest.update(render(image, style, method).tobytes())
print(digest.hexdigest())
"""


def test_render_is_deterministic_across_processes() -> None:
    """A fresh process has empty texture caches, so equal bytes mean the textures are seeded."""
    image = photo("astronaut", 256)
    digest = hashlib.sha256()
    for style, method in COMBINATIONS:
        digest.update(render(image, style, method).tobytes())
    result = subprocess.run(
        [sys.executable, "-c", _DIGEST_SCRIPT, str(SAMPLE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip() == digest.hexdigest()


def test_sketch_bytes_are_deterministic() -> None:
    params = SketchParams(intensity=0.7, max_side=300, format="png")
    first = sketch_bytes(photo_bytes("coffee"), "watercolor", "artistic", params)
    second = sketch_bytes(photo_bytes("coffee"), "watercolor", "artistic", params)
    assert first == second


# --- awkward inputs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [(1, 1, 3), (3, 3, 3), (10000, 20, 3), (20, 10000, 3), (2, 5, 3)],
    ids=lambda s: "x".join(map(str, s[:2])),
)
def test_tiny_and_extreme_shapes_do_not_crash(shape: tuple[int, int, int]) -> None:
    # A crop of a real photo, stretched to the shape: real texture rather than random noise.
    source = photo("coffee", 600)
    image = np.asarray(
        cv2.resize(source, (shape[1], shape[0]), interpolation=cv2.INTER_AREA), np.uint8
    )
    for style, method in COMBINATIONS:
        out = render(image, style, method)
        assert out.shape[:2] == shape[:2], (style, method)


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (40, 140, 220)])
def test_flat_colour_does_not_crash(colour: tuple[int, int, int]) -> None:
    image = np.full((120, 160, 3), colour, np.uint8)
    for style, method in COMBINATIONS:
        out = render(image, style, method)
        assert out.shape[:2] == (120, 160)
        # No invented structure: textures and hatching may vary locally, but one part of a
        # flat picture is drawn like any other.
        gray = as_gray(out)
        assert abs(float(gray[:64, :64].mean()) - float(gray[64:, 64:].mean())) < 25.0, (
            style,
            method,
            colour,
        )


def test_gray_and_bgra_inputs() -> None:
    bgr = photo("chelsea", 200)
    gray = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), np.uint8)
    bgra = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), np.uint8)
    for style, method in COMBINATIONS:
        from_gray = render(gray, style, method)
        assert from_gray.shape[:2] == gray.shape
        # Opaque alpha changes nothing: it is dropped, not drawn.
        assert np.array_equal(render(bgra, style, method), render(bgr, style, method))
    transparent = bgra.copy()
    transparent[:, :, 3] = 0
    # Fully transparent pixels are white paper, whatever colour hides under them.
    blank = render(transparent, "pencil", "basic")
    assert float(blank.mean()) > 200


def test_render_refuses_non_images() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        render(np.zeros((0, 5, 3), np.uint8), "pencil", "basic")
    with pytest.raises(ValueError, match="channels"):
        render(np.zeros((5, 5, 2), np.uint8), "pencil", "basic")


# --- load ------------------------------------------------------------------------------------


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _rgb_photo(side: int = 240) -> Image.Image:
    rgb = cv2.cvtColor(photo("coffee", side), cv2.COLOR_BGR2RGB)
    return Image.fromarray(np.ascontiguousarray(rgb))


def test_load_applies_exif_orientation_first() -> None:
    upright = _rgb_photo()  # landscape, 240×160
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways writes
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    loaded = load(buffer.getvalue(), max_side=120)
    assert loaded.shape == (80, 120, 3)
    expected = cv2.resize(
        cv2.cvtColor(np.asarray(upright), cv2.COLOR_RGB2BGR),
        (120, 80),
        interpolation=cv2.INTER_AREA,
    )
    assert float(np.abs(loaded.astype(np.float32) - expected).mean()) < 6.0


def test_load_reduces_large_jpegs_and_never_upscales() -> None:
    big = cv2.resize(photo("coffee", 600), (2400, 1600), interpolation=cv2.INTER_CUBIC)
    ok, buffer = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    assert load(buffer.tobytes(), max_side=500).shape == (333, 500, 3)
    assert load(buffer.tobytes(), max_side=1200).shape == (800, 1200, 3)
    assert load(photo_bytes("coffee"), max_side=8192).shape == (400, 600, 3)


def test_load_composites_alpha_on_white() -> None:
    rgba = _rgb_photo().convert("RGBA")
    alpha = np.full((160, 240), 255, np.uint8)
    alpha[:, 120:] = 0
    rgba.putalpha(Image.fromarray(alpha))
    loaded = load(_png(rgba), max_side=1024)
    assert loaded.shape == (160, 240, 3)
    assert (loaded[:, 121:] == 255).all()
    expected = cv2.cvtColor(np.asarray(_rgb_photo()), cv2.COLOR_RGB2BGR)
    assert np.array_equal(loaded[:, :119], expected[:, :119])


def test_load_converts_16_bit_and_palette() -> None:
    bgr = photo("coffee", 240)
    wide = bgr.astype(np.uint16) * 257  # the same picture at 16 bits per channel
    ok, buffer = cv2.imencode(".png", wide)
    assert ok
    loaded16 = load(buffer.tobytes(), max_side=1024)
    assert loaded16.dtype == np.uint8
    assert loaded16.shape == bgr.shape
    assert float(np.abs(loaded16.astype(np.int16) - bgr).max()) <= 1

    gray16 = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257)
    loaded_gray = load(_png(gray16), max_side=1024)
    assert loaded_gray.shape == bgr.shape

    palette = _rgb_photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    loaded_palette = load(_png(palette), max_side=1024)
    expected = cv2.cvtColor(np.asarray(palette.convert("RGB")), cv2.COLOR_RGB2BGR)
    assert np.array_equal(loaded_palette, expected)


def test_load_reads_webp_and_gif_and_refuses_garbage() -> None:
    for fmt in ("WEBP", "GIF"):
        buffer = io.BytesIO()
        _rgb_photo().save(buffer, fmt)
        assert load(buffer.getvalue(), max_side=1024).shape == (160, 240, 3)
    for junk in (b"", b"not an image", photo_bytes("coffee")[:300]):
        with pytest.raises(ValueError, match=r"(?i)jpeg|image"):
            load(junk, max_side=512)


# --- encode and sketch_bytes -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_encode_keeps_gray_gray(fmt: str) -> None:
    drawn = render(photo("chelsea", 200), "pencil", "basic")
    data = encode(drawn, fmt)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
        if fmt == "webp":
            # WebP has no gray colour type: the file is RGB, but neutral (equal channels).
            rgb = np.asarray(im.convert("RGB"), np.int16)
            assert int(np.abs(rgb[:, :, 0] - rgb[:, :, 1]).max()) <= 2
            assert int(np.abs(rgb[:, :, 1] - rgb[:, :, 2]).max()) <= 2
        else:
            assert im.mode == "L"
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None
    if fmt != "webp":
        assert decoded.ndim == 2
    if fmt == "png":
        assert np.array_equal(decoded, drawn)


def test_encode_colour_and_refusals() -> None:
    drawn = render(photo("chelsea", 200), "oil", "basic")
    with Image.open(io.BytesIO(encode(drawn, "jpeg", quality=80))) as im:
        assert (im.format, im.mode) == ("JPEG", "RGB")
    with pytest.raises(ValueError, match="format"):
        encode(drawn, "bmp")
    with pytest.raises(ValueError, match="quality"):
        encode(drawn, "jpeg", quality=0)


def test_sketch_bytes_returns_the_encoded_size() -> None:
    params = SketchParams(max_side=300, format="jpeg")
    data, width, height = sketch_bytes(photo_bytes("coffee"), "ink", "advanced", params)
    assert (width, height) == (300, 200)
    with Image.open(io.BytesIO(data)) as im:
        assert (im.format, im.size, im.mode) == ("JPEG", (300, 200), "L")
    with pytest.raises(UnknownStyle):
        sketch_bytes(photo_bytes("coffee"), "crayon", "basic", params)


# --- gallery ---------------------------------------------------------------------------------


def test_sample_photograph_is_small() -> None:
    assert SAMPLE.stat().st_size <= 80 * 1024
    with Image.open(SAMPLE) as im:
        assert im.format == "JPEG"
        assert max(im.size) <= 640


@pytest.mark.parametrize("style", list(STYLES))
def test_preview_is_a_small_cached_png(style: str) -> None:
    data = preview(style)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as im:
        assert max(im.size) == 160
        assert im.mode == ("L" if STYLES[style].grayscale else "RGB")
    assert preview(style) is data


def test_preview_refuses_unknown_style() -> None:
    with pytest.raises(UnknownStyle):
        preview("crayon")


def test_contact_sheet_layout() -> None:
    cell = 96
    sheet = contact_sheet(photo("astronaut", 256), cell=cell)
    gap = 4  # max(4, cell // 32)
    rows, cols = 1 + len(STYLES), 1 + len(METHODS)
    assert sheet.shape == (rows * cell + (rows + 1) * gap, cols * cell + (cols + 1) * gap, 3)
    assert sheet.dtype == np.uint8
    # Every result cell holds a picture, not an empty card.
    for row in range(1, rows):
        for col in range(1, cols):
            y, x = gap + row * (cell + gap), gap + col * (cell + gap)
            assert float(sheet[y : y + cell, x : x + cell].std()) > 20, (row, col)
