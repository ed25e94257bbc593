"""The one decoder: header first, pixel budget before any decode, reduced decodes, orientation,
alpha and bounded memory for formats that cannot shrink on load."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from backend.imaging.decode import (
    ImageError,
    ImageHeader,
    decode,
    fit_size,
    jpeg_reduction,
    probe,
)
from tests.images import samples
from tests.photos import PHOTO, photo_jpeg

REPO = Path(__file__).resolve().parents[2]
MAX_PIXELS = 50_000_000


def bgr(color: tuple[int, int, int]) -> tuple[int, int, int]:
    return color[2], color[1], color[0]


def close(actual: np.ndarray, expected: tuple[int, ...], tol: int = 16) -> bool:
    return all(abs(int(a) - e) <= tol for a, e in zip(actual, expected, strict=True))


# --- probe -----------------------------------------------------------------------------------


def test_probe_reads_the_header_of_a_real_photograph() -> None:
    header = probe(PHOTO.read_bytes(), max_pixels=MAX_PIXELS)
    assert header == ImageHeader("jpeg", 2560, 1600, 1, 1, False)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_probe_reports_the_displayed_size(orientation: int) -> None:
    header = probe(samples.oriented_jpeg(orientation), max_pixels=MAX_PIXELS)
    assert (header.width, header.height) == samples.UPRIGHT_SIZE
    assert header.orientation == orientation
    swapped = (samples.UPRIGHT_SIZE[1], samples.UPRIGHT_SIZE[0])
    assert header.stored_size == (swapped if orientation >= 5 else samples.UPRIGHT_SIZE)


@pytest.mark.parametrize(
    ("name", "fmt", "alpha", "frames"),
    [
        ("png_rgba", "png", True, 1),
        ("png", "png", False, 1),
        ("gif", "gif", False, 1),
        ("webp", "webp", False, 1),
        ("gif_animated", "gif", False, 2),
        ("apng", "png", False, 3),
    ],
)
def test_probe_formats_alpha_and_frames(name: str, fmt: str, alpha: bool, frames: int) -> None:
    header = probe(getattr(samples, name)(), max_pixels=MAX_PIXELS)
    assert (header.format, header.has_alpha, header.frames >= 2) == (fmt, alpha, frames >= 2)


def test_probe_sees_palette_transparency() -> None:
    assert probe(samples.png_palette(transparent=True), max_pixels=MAX_PIXELS).has_alpha


@pytest.mark.parametrize(
    "bomb", [samples.png_bomb, samples.jpeg_bomb, samples.gif_bomb, samples.webp_bomb]
)
def test_pixel_budget_is_checked_on_the_header_before_any_decode(bomb: object) -> None:
    data = bomb()  # type: ignore[operator]
    with pytest.raises(ImageError) as caught:
        decode(data, max_side=200, max_pixels=MAX_PIXELS)
    assert caught.value.code == "upload.too_many_pixels"
    with pytest.raises(ImageError) as caught:
        probe(data, max_pixels=MAX_PIXELS)
    assert caught.value.code == "upload.too_many_pixels"


def test_budget_applies_to_small_limits_too() -> None:
    with pytest.raises(ImageError) as caught:
        decode(samples.png((64, 48)), max_side=None, max_pixels=64 * 48 - 1)
    assert caught.value.code == "upload.too_many_pixels"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"<html>hi</html>", "upload.unrecognized"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "upload.corrupt"),
    ],
)
def test_unusable_bytes_raise_image_errors_that_are_value_errors(data: bytes, code: str) -> None:
    with pytest.raises(ValueError, match=".") as caught:
        decode(data, max_side=100, max_pixels=MAX_PIXELS)
    assert isinstance(caught.value, ImageError)
    assert caught.value.code == code


# --- sizes and shrink-on-load ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factor", "denominator"), [(1, 1), (2, 2), (3, 2), (7, 4), (8, 8), (20, 8)]
)
def test_jpeg_reduction_never_goes_below_the_target(factor: int, denominator: int) -> None:
    assert jpeg_reduction(factor)[0] == denominator


def test_real_photograph_decodes_to_the_exact_fitted_size() -> None:
    data = photo_jpeg(12.0)
    header = probe(data, max_pixels=MAX_PIXELS)
    for side in (200, 800, 1500):
        pixels = decode(data, max_side=side, max_pixels=MAX_PIXELS)
        assert pixels.dtype == np.uint8
        assert (pixels.shape[1], pixels.shape[0]) == fit_size(header.width, header.height, side)
        assert pixels.shape[2] == 3


def test_full_size_when_no_bound() -> None:
    pixels = decode(PHOTO.read_bytes(), max_side=None, max_pixels=MAX_PIXELS)
    assert pixels.shape == (1600, 2560, 3)


def test_reduced_jpeg_decode_matches_a_full_decode() -> None:
    data = PHOTO.read_bytes()
    ours = decode(data, max_side=640, max_pixels=MAX_PIXELS)
    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert full is not None
    naive = cv2.resize(full, (640, 400), interpolation=cv2.INTER_AREA)
    assert ours.shape == naive.shape
    assert float(np.mean(np.abs(ours.astype(np.int16) - naive.astype(np.int16)))) < 3.0


def test_never_upscales() -> None:
    assert decode(samples.png((64, 48)), max_side=4000, max_pixels=MAX_PIXELS).shape == (48, 64, 3)


@pytest.mark.parametrize("name", ["png", "webp", "gif", "png_16bit_rgb", "png_gray"])
def test_every_format_reduces_exactly(name: str) -> None:
    data: bytes = getattr(samples, name)()
    pixels = decode(data, max_side=20, max_pixels=MAX_PIXELS)
    assert (pixels.shape[1], pixels.shape[0]) == (20, 15)
    assert pixels.shape[2] == 3


def test_big_webp_shrinks_on_load_to_the_exact_size() -> None:
    image = Image.fromarray(samples.photo_like(1001, 703)[:, :, ::-1].copy())
    buffer = samples.io.BytesIO()
    image.save(buffer, "WEBP", quality=90)
    pixels = decode(buffer.getvalue(), max_side=250, max_pixels=MAX_PIXELS)
    assert (pixels.shape[1], pixels.shape[0]) == fit_size(1001, 703, 250)


def test_sixteen_bit_keeps_the_top_byte() -> None:
    pixels = decode(samples.png_16bit_gray(0x8000), max_side=None, max_pixels=MAX_PIXELS)
    assert int(pixels[0, 0, 0]) == 0x80


# --- orientation and alpha -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_applied(fmt: str, orientation: int) -> None:
    data = (
        samples.oriented_jpeg(orientation) if fmt == "jpeg" else samples.oriented_png(orientation)
    )
    pixels = decode(data, max_side=None, max_pixels=MAX_PIXELS)
    height, width = pixels.shape[:2]
    assert (width, height) == samples.UPRIGHT_SIZE
    assert close(pixels[height // 8, width // 8], bgr(samples.RED))
    assert close(pixels[height * 7 // 8, width * 7 // 8], bgr(samples.BLUE))


def test_alpha_is_composited_on_white_unless_asked_for() -> None:
    rgba = np.zeros((60, 90, 4), np.uint8)
    rgba[:, :45] = (*samples.RED, 255)  # left half opaque red, right half transparent
    data = samples.png(image=Image.fromarray(rgba, "RGBA"))
    flat = decode(data, max_side=None, max_pixels=MAX_PIXELS)
    assert flat.shape == (60, 90, 3)
    assert close(flat[30, 10], bgr(samples.RED))
    assert close(flat[30, 80], (255, 255, 255))
    kept = decode(data, max_side=None, max_pixels=MAX_PIXELS, alpha=True)
    assert kept.shape == (60, 90, 4)
    assert close(kept[30, 10], (*bgr(samples.RED), 255))
    assert int(kept[30, 80, 3]) == 0


def test_alpha_survives_a_reduced_decode_without_dark_fringes() -> None:
    rgba = np.zeros((1500, 2000, 4), np.uint8)
    rgba[:, :1001] = (*samples.RED, 255)
    data = samples.png(image=Image.fromarray(rgba, "RGBA"))
    kept = decode(data, max_side=800, max_pixels=MAX_PIXELS, alpha=True)
    assert kept.shape == (600, 800, 4)
    opaque = kept[:, :, 3] > 0
    # Premultiplied shrinking: wherever any red shows, it is red, not red mixed with black.
    assert int(kept[:, :, 2][opaque].min()) >= 200


def test_alpha_request_on_an_opaque_image_gives_bgr() -> None:
    assert decode(samples.jpeg(), max_side=None, max_pixels=MAX_PIXELS, alpha=True).shape[2] == 3


# --- memory ----------------------------------------------------------------------------------

_PEAK_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import cv2
    import numpy as np

    from backend.imaging.decode import decode

    def rss_kb(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])

    kind = sys.argv[1]
    if kind == "png":
        rgba = np.zeros((7000, 7000, 4), np.uint8)
        rgba[100:300, 100:900] = (30, 200, 10, 255)
        data = cv2.imencode(".png", rgba, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()
        del rgba
    else:
        from tests.photos import photo_jpeg
        data = photo_jpeg(12.0)
    decode(cv2.imencode(".png", np.zeros((64, 64, 4), np.uint8))[1].tobytes(), max_side=32,
           max_pixels=10**8)
    decode(cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))[1].tobytes(), max_side=32,
           max_pixels=10**8)
    Path("/proc/self/clear_refs").write_text("5")
    before = rss_kb("VmRSS")
    pixels = decode(data, max_side=800, max_pixels=50_000_000)
    print(pixels.shape[1], pixels.shape[0], (rss_kb("VmHWM") - before) // 1024)
    """
)


@pytest.mark.parametrize(("kind", "full_mb", "bound_mb"), [("png", 196, 100), ("jpeg", 36, 12)])
def test_decode_peak_memory_stays_far_below_a_full_decode(
    kind: str, full_mb: int, bound_mb: int
) -> None:
    """A 49 MP RGBA PNG streams through libvips, a 12 MP JPEG decodes at 1/4: neither ever
    holds the full image (``full_mb``) in memory."""
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_CHILD, kind],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    width, height, peak_mb = (int(v) for v in result.stdout.split())
    assert max(width, height) == 800
    assert peak_mb < bound_mb < full_mb, f"peak +{peak_mb} MB"


# --- images that cannot stream ---------------------------------------------------------------


def interlaced_png(side: int, *, depth: int = 8) -> bytes:
    import pyvips

    image = pyvips.Image.black(side, side, bands=4) + [10, 200, 30, 255]
    if depth == 16:
        image = (image * 256).cast("ushort").copy(interpretation="rgb16")
    else:
        image = image.cast("uchar")
    return bytes(image.pngsave_buffer(interlace=True, bitdepth=depth, compression=9))


def gif_of(side: int) -> bytes:
    buffer = samples.io.BytesIO()
    Image.new("P", (side, side)).save(buffer, "GIF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "bytes_per_pixel"),
    [
        (lambda side: interlaced_png(side), 4),
        (lambda side: interlaced_png(side, depth=16), 8),
        (gif_of, 4),
    ],
    ids=["interlaced-rgba8", "interlaced-rgba16", "gif"],
)
def test_whole_frame_decodes_are_bounded_in_bytes(make: object, bytes_per_pixel: int) -> None:
    from backend.imaging.decode import MAX_FRAME_BYTES

    # Just over the byte budget, far under the pixel budget: refused on the header.
    side = int((MAX_FRAME_BYTES / bytes_per_pixel) ** 0.5) + 8
    big = make(side)  # type: ignore[operator]
    assert side * side < MAX_PIXELS
    with pytest.raises(ImageError) as caught:
        probe(big, max_pixels=MAX_PIXELS)
    assert caught.value.code == "upload.too_many_pixels"
    small = make(400)  # type: ignore[operator]
    assert decode(small, max_side=100, max_pixels=MAX_PIXELS).shape == (100, 100, 3)


def test_non_interlaced_png_is_not_held_to_the_frame_budget() -> None:
    import pyvips

    plain = pyvips.Image.black(7000, 7000, bands=4).cast("uchar").pngsave_buffer(compression=9)
    assert probe(bytes(plain), max_pixels=MAX_PIXELS).width == 7000
