"""Thumbnails: sizes, orientation, colour handling, format and the absence of metadata."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from backend.images import thumbnails
from backend.images.thumbnails import SIZES, render_thumbnails, thumbnail_size
from tests.images import samples


def open_thumb(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def rgb_at(im: Image.Image, fx: float, fy: float) -> tuple[int, int, int]:
    """Colour at a fractional position, so checks hold for any thumbnail size."""
    x = min(im.width - 1, int(im.width * fx))
    y = min(im.height - 1, int(im.height * fy))
    r, g, b = im.convert("RGB").getpixel((x, y))  # type: ignore[misc]
    return int(r), int(g), int(b)


def close_to(actual: tuple[int, int, int], expected: tuple[int, int, int], tol: int = 12) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


# --- thumbnail_size ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "long_side", "expected"),
    [
        ((4000, 3000), 800, (800, 600)),
        ((3000, 4000), 800, (600, 800)),
        ((4000, 3000), 200, (200, 150)),
        ((6000, 4000), 800, (800, 533)),
        ((1000, 333), 200, (200, 67)),
        ((1000, 1000), 200, (200, 200)),
        ((801, 1), 800, (800, 1)),
        ((1, 5000), 200, (1, 200)),
        ((100, 50), 800, (100, 50)),
        ((800, 600), 800, (800, 600)),
        ((799, 1200), 800, (533, 800)),
    ],
)
def test_thumbnail_size(size: tuple[int, int], long_side: int, expected: tuple[int, int]) -> None:
    assert thumbnail_size(size[0], size[1], long_side) == expected


@pytest.mark.parametrize("args", [(0, 10, 10), (10, 0, 10), (10, 10, 0), (-1, 10, 10)])
def test_thumbnail_size_refuses_non_positive(args: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="positive"):
        thumbnail_size(*args)


# --- sizes and format ----------------------------------------------------------------------


def test_default_sizes() -> None:
    assert SIZES == {"small": 200, "medium": 800}


def test_long_side_is_exact_and_output_is_jpeg() -> None:
    data = samples.jpeg(image=Image.fromarray(samples.photo_like(1600, 1200)))
    out = render_thumbnails(data)
    assert list(out) == ["small", "medium"]
    small, medium = open_thumb(out["small"]), open_thumb(out["medium"])
    assert (small.format, small.size) == ("JPEG", (200, 150))
    assert (medium.format, medium.size) == ("JPEG", (800, 600))
    assert out["small"].startswith(b"\xff\xd8\xff")


def test_portrait_long_side_is_the_height() -> None:
    data = samples.png(image=Image.fromarray(samples.photo_like(900, 1500)))
    out = render_thumbnails(data)
    assert open_thumb(out["medium"]).size == (480, 800)
    assert open_thumb(out["small"]).size == (120, 200)


@pytest.mark.parametrize(
    "make",
    [
        lambda: samples.jpeg((100, 50)),
        lambda: samples.png((100, 50)),
        lambda: samples.webp((100, 50)),
        lambda: samples.gif((100, 50)),
    ],
    ids=["jpeg", "png", "webp", "gif"],
)
def test_never_upscales(make: Callable[[], bytes]) -> None:
    out = render_thumbnails(make())
    assert open_thumb(out["small"]).size == (100, 50)
    assert open_thumb(out["medium"]).size == (100, 50)


def test_between_sizes_only_the_smaller_shrinks() -> None:
    out = render_thumbnails(samples.jpeg((500, 300)))
    assert open_thumb(out["medium"]).size == (500, 300)
    assert open_thumb(out["small"]).size == (200, 120)


def test_webp_output() -> None:
    out = render_thumbnails(samples.jpeg((1000, 500)), fmt="webp", quality=80)
    for data in out.values():
        assert data[:4] == b"RIFF"
        assert data[8:12] == b"WEBP"
    assert open_thumb(out["medium"]).size == (800, 400)
    assert open_thumb(out["medium"]).format == "WEBP"


def test_custom_sizes_keep_caller_order() -> None:
    out = render_thumbnails(samples.jpeg((1000, 800)), {"tiny": 50, "big": 500, "mid": 100})
    assert list(out) == ["tiny", "big", "mid"]
    assert [open_thumb(out[k]).size for k in out] == [(50, 40), (500, 400), (100, 80)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fmt": "png"}, "format"),
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"sizes": {}}, "sizes"),
        ({"sizes": {"small": 0}}, "sizes"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_thumbnails(samples.jpeg(), **kwargs)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        samples.svg(),
        samples.xlsx_bytes(),
        b"\xff\xd8\xff" + b"\x00" * 100,
        samples.png()[:30],
        b"GIF89a\x01",
        samples.truncated_jpeg(),
    ],
    ids=["empty", "text", "svg", "xlsx", "jpeg-garbage", "png-cut", "gif-cut", "jpeg-truncated"],
)
def test_undecodable_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any message; the type is the contract
        render_thumbnails(data)


# --- metadata is stripped ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_thumbnails_carry_no_metadata(fmt: str) -> None:
    source = samples.jpeg_with_icc_and_exif()
    assert b"Exif" in source
    assert b"ICC_PROFILE" in source
    for data in render_thumbnails(source, fmt=fmt).values():
        im = open_thumb(data)
        assert len(im.getexif()) == 0
        assert not {"exif", "icc_profile", "xmp"} & set(im.info)
        for marker in (b"Exif", b"ICC_PROFILE", samples.MAKE.encode(), samples.LENS.encode()):
            assert marker not in data


# --- orientation ---------------------------------------------------------------------------


def assert_upright(im: Image.Image) -> None:
    """The upright picture is landscape with a red top-left third and blue elsewhere."""
    assert im.width > im.height, f"not landscape: {im.size}"
    assert close_to(rgb_at(im, 1 / 6, 1 / 6), samples.RED), "top-left is not red"
    for fx, fy in ((5 / 6, 1 / 6), (1 / 6, 5 / 6), (5 / 6, 5 / 6)):
        assert close_to(rgb_at(im, fx, fy), samples.BLUE), f"red leaked to ({fx}, {fy})"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_samples_are_upright_under_pillow(orientation: int) -> None:
    # Guards the test data itself: Pillow's own EXIF transpose shows them upright.
    im = ImageOps.exif_transpose(open_thumb(samples.oriented_jpeg(orientation)))
    assert im.size == samples.UPRIGHT_SIZE
    assert_upright(im)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("size", [samples.UPRIGHT_SIZE, (1800, 1200), (3600, 2400)])
def test_jpeg_thumbnails_are_upright(orientation: int, size: tuple[int, int]) -> None:
    out = render_thumbnails(samples.oriented_jpeg(orientation, size))
    for name, long_side in SIZES.items():
        im = open_thumb(out[name])
        assert im.size == thumbnail_size(size[0], size[1], long_side)
        assert_upright(im)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_png_exif_orientation_is_applied(orientation: int) -> None:
    out = render_thumbnails(samples.oriented_png(orientation))
    assert_upright(open_thumb(out["small"]))


# --- colour handling -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (samples.jpeg, samples.RED),
        (samples.png, samples.RED),
        (samples.webp, samples.RED),
        (samples.png_16bit_rgb, (220, 30, 30)),
        (samples.cmyk_jpeg, (255, 0, 0)),
        (samples.grayscale_jpeg, (128, 128, 128)),
        (samples.png_gray, (90, 90, 90)),
        (lambda: samples.png_16bit_gray(0x8000), (128, 128, 128)),
        (lambda: samples.png_16bit_gray(0xFFFF), (255, 255, 255)),
    ],
    ids=["jpeg", "png", "webp", "png16", "cmyk", "gray-jpeg", "gray-png", "gray16", "gray16-max"],
)
def test_colours_survive(make: Callable[[], bytes], expected: tuple[int, int, int]) -> None:
    im = open_thumb(render_thumbnails(make())["small"])
    assert im.mode == "RGB"
    assert close_to(rgb_at(im, 0.5, 0.5), expected)


def test_alpha_is_flattened_on_white() -> None:
    im = open_thumb(render_thumbnails(samples.png_rgba())["small"])
    assert im.mode == "RGB"
    assert close_to(rgb_at(im, 0.2, 0.5), samples.RED)
    assert close_to(rgb_at(im, 0.8, 0.5), (255, 255, 255))


def test_half_transparent_pixels_blend_with_white() -> None:
    rgba = np.zeros((50, 50, 4), dtype=np.uint8)
    rgba[...] = (0, 0, 0, 128)
    im = open_thumb(render_thumbnails(samples.png(image=Image.fromarray(rgba, "RGBA")))["small"])
    assert close_to(rgb_at(im, 0.5, 0.5), (127, 127, 127), tol=3)


def test_large_png_with_alpha_is_flattened_before_shrinking() -> None:
    rgba = np.zeros((1500, 2000, 4), dtype=np.uint8)
    # Opaque red up to an odd column, so a whole-factor reduce mixes red with transparent black.
    rgba[:, :1001] = (*samples.RED, 255)
    data = samples.png(image=Image.fromarray(rgba, "RGBA"))
    medium = open_thumb(render_thumbnails(data)["medium"])
    assert medium.size == (800, 600)
    assert close_to(rgb_at(medium, 0.25, 0.5), samples.RED)
    assert close_to(rgb_at(medium, 0.75, 0.5), (255, 255, 255))
    # Before encoding (JPEG's chroma subsampling blurs edges by itself): averaging before
    # flattening would turn the seam dark (R ≈ 180); flattening first keeps it between red
    # and white.
    pixels, size = thumbnails.decode_oriented(data, 800)
    assert size == (2000, 1500)
    assert int(pixels[:, :, 2].min()) >= 215


@pytest.mark.parametrize("transparent", [False, True])
def test_palette_png(transparent: bool) -> None:
    im = open_thumb(render_thumbnails(samples.png_palette(transparent=transparent))["small"])
    assert close_to(rgb_at(im, 1 / 6, 1 / 6), samples.RED)
    expected_rest = (255, 255, 255) if transparent else samples.BLUE
    assert close_to(rgb_at(im, 5 / 6, 5 / 6), expected_rest)


def test_gif_first_frame() -> None:
    im = open_thumb(render_thumbnails(samples.gif((90, 60)))["small"])
    assert_upright(im)


def test_matches_a_full_resolution_reference() -> None:
    """Reduced decode plus area resize stays close to a careful full-size downscale."""
    source = samples.photo_like(2400, 1600, seed=3)
    data = samples.encode_jpeg_cv2(source, quality=95)
    thumb = np.asarray(open_thumb(render_thumbnails(data, quality=95)["medium"]).convert("RGB"))
    reference_bgr = cv2.resize(source, (800, 533), interpolation=cv2.INTER_AREA)
    reference = cv2.cvtColor(reference_bgr, cv2.COLOR_BGR2RGB)
    difference = np.abs(thumb.astype(np.int16) - reference.astype(np.int16))
    assert float(difference.mean()) < 3.0


# --- how the work is done ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "sizes", "expected_flag"),
    [
        ((1600, 1200), {"only": 200}, cv2.IMREAD_REDUCED_COLOR_8),
        ((4000, 3000), SIZES, cv2.IMREAD_REDUCED_COLOR_4),
        ((1700, 1000), SIZES, cv2.IMREAD_REDUCED_COLOR_2),
        ((1500, 1000), SIZES, cv2.IMREAD_COLOR),
        ((100, 50), SIZES, cv2.IMREAD_COLOR),
    ],
)
def test_jpeg_decode_is_reduced_but_never_below_the_largest_size(
    monkeypatch: pytest.MonkeyPatch,
    size: tuple[int, int],
    sizes: dict[str, int],
    expected_flag: int,
) -> None:
    calls: list[tuple[int, tuple[int, ...]]] = []
    real_imdecode = cv2.imdecode

    def spy(buffer: Any, flags: int) -> Any:
        decoded = real_imdecode(buffer, flags)
        assert decoded is not None
        calls.append((flags, decoded.shape))
        return decoded

    monkeypatch.setattr(thumbnails.cv2, "imdecode", spy)
    render_thumbnails(samples.jpeg(size), sizes)
    assert len(calls) == 1, "decoded exactly once"
    flags, shape = calls[0]
    assert flags == expected_flag | cv2.IMREAD_IGNORE_ORIENTATION
    assert max(shape[:2]) >= min(max(size), max(sizes.values()))


def test_smaller_sizes_are_made_from_the_larger(monkeypatch: pytest.MonkeyPatch) -> None:
    inputs: list[tuple[int, ...]] = []
    real_resize = cv2.resize

    def spy(src: Any, dsize: Any, **kwargs: Any) -> Any:
        assert kwargs["interpolation"] == cv2.INTER_AREA
        inputs.append(src.shape)
        return real_resize(src, dsize, **kwargs)

    monkeypatch.setattr(thumbnails.cv2, "resize", spy)
    render_thumbnails(samples.jpeg((4000, 3000)))
    assert inputs == [(750, 1000, 3), (600, 800, 3)]
