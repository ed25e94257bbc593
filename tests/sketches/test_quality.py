"""What a user sees in a sketch, measured on real photographs (``tests/photos.py``).

- Methods: every pair of methods of a style differs by a mean absolute pixel difference of at
  least 20 gray levels (all channels, at the rendered size), on a portrait (astronaut), a
  scene with dark flat areas (coffee) and a macro photograph.
- White stays white: a flat white picture, and the background of a product photographed on
  white, never come out darker than 200 in any style or method.
- No mottling: watercolor and pastel add no texture where the photograph is flat (see
  ``flat_energy``).
- Determinism: the same input renders to the same pixels.
"""

from __future__ import annotations

import itertools
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from backend.sketches.styles import METHODS, STYLES, load, render
from tests.photos import DARK_SCENE, DATA, PHOTO, PORTRAIT

Pixels = npt.NDArray[np.uint8]

PHOTOS: dict[str, tuple[Path, int]] = {
    "portrait": (PORTRAIT, 512),
    "dark-scene": (DARK_SCENE, 600),
    "macro": (PHOTO, 1024),
}
COMBINATIONS = [(style, method) for style in STYLES for method in METHODS]
METHOD_GAP = 20.0
BLOCK = 32


@cache
def photo(name: str) -> Pixels:
    path, side = PHOTOS[name]
    return load(path.read_bytes(), max_side=side)


@cache
def drawn(name: str, style: str, method: str) -> Pixels:
    return render(photo(name), style, method)


def luminance(image: Pixels) -> npt.NDArray[np.float32]:
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return np.asarray(gray, np.float32)


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("style", STYLES)
def test_every_method_is_visibly_its_own(name: str, style: str) -> None:
    for a, b in itertools.combinations(METHODS, 2):
        one, two = drawn(name, style, a), drawn(name, style, b)
        mad = float(np.abs(one.astype(np.float32) - two.astype(np.float32)).mean())
        assert mad >= METHOD_GAP, (name, style, a, b, round(mad, 1))


@pytest.mark.parametrize(("style", "method"), COMBINATIONS)
def test_flat_white_stays_white(style: str, method: str) -> None:
    white = np.full((512, 512, 3), 255, np.uint8)
    out = render(white, style, method)
    assert not np.isnan(out.astype(np.float32)).any()
    assert int(out.min()) >= 200, (style, method, int(out.min()))


@cache
def product_on_white() -> tuple[Pixels, npt.NDArray[np.bool_]]:
    """The cat of ``chelsea.jpg`` cut out as an ellipse and set on a pure white 800×600 sheet,
    as a catalogue shot is; returns the picture and its background (≥ 40 px from the cat)."""
    cat = cv2.imread(str(DATA / "chelsea.jpg"), cv2.IMREAD_COLOR)
    assert cat is not None
    h, w = cat.shape[:2]
    sheet = np.full((600, 800, 3), 255, np.uint8)
    mask = np.zeros((600, 800), np.uint8)
    top, left = (600 - h) // 2, (800 - w) // 2
    cv2.ellipse(mask, (400, 300), (w // 2 - 10, h // 2 - 10), 0, 0, 360, 255, -1)
    sheet[top : top + h, left : left + w] = cat
    sheet[mask == 0] = 255
    near = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (81, 81)))
    return sheet, near == 0


@pytest.mark.parametrize(("style", "method"), COMBINATIONS)
def test_product_photo_keeps_a_white_background(style: str, method: str) -> None:
    picture, background = product_on_white()
    out = luminance(render(picture, style, method))[background]
    assert float(out.min()) >= 200, (style, method, float(out.min()))
    assert float(out.mean()) >= 240, (style, method, float(out.mean()))


def flat_energy(image: Pixels, blocks: list[tuple[int, int]]) -> float:
    """Mean square of the luminance left after a σ=2 Gaussian blur, over ``blocks``.

    This is the texture a clean wash should not have: speckle and mottling at the scale of a
    few pixels. It is measured only in the source's flattest 10 % of 32-pixel blocks (by the
    source's own standard deviation), where a painter lays an even wash and any texture is
    added by the style, not inherited from the picture.
    """
    y = luminance(image)
    residual = y - cv2.GaussianBlur(y, (0, 0), 2.0)
    return float(np.mean([(residual[i : i + BLOCK, j : j + BLOCK] ** 2).mean() for i, j in blocks]))


def flattest_blocks(image: Pixels) -> list[tuple[int, int]]:
    y = luminance(image)
    h, w = y.shape
    blocks = [
        (i, j) for i in range(0, h - BLOCK + 1, BLOCK) for j in range(0, w - BLOCK + 1, BLOCK)
    ]
    spread = np.array([y[i : i + BLOCK, j : j + BLOCK].std() for i, j in blocks])
    return [blocks[k] for k in np.argsort(spread, kind="stable")[: max(1, len(blocks) // 10)]]


@pytest.mark.parametrize("name", ["portrait", "dark-scene"])
@pytest.mark.parametrize("style", ["watercolor", "pastel"])
def test_washes_and_chalk_are_not_mottled(name: str, style: str) -> None:
    """At most 1.5× the texture of ``cv2.stylization`` (OpenCV's own clean watercolour-like
    filter) in the same blocks. Where stylization smooths below the photograph's own noise
    (the portrait's black background), the photograph's energy is the reference instead: a
    render that keeps the picture's own grain has added nothing. The old styles measured
    20-170× this bound (grey noise laid over every flat area)."""
    source = photo(name)
    blocks = flattest_blocks(source)
    reference = max(
        flat_energy(
            np.asarray(cv2.stylization(source, sigma_s=60, sigma_r=0.45), np.uint8), blocks
        ),
        flat_energy(source, blocks),
    )
    for method in METHODS:
        energy = flat_energy(drawn(name, style, method), blocks)
        assert energy <= 1.5 * reference, (style, method, round(energy, 2), round(reference, 2))


@pytest.mark.parametrize(("style", "method"), COMBINATIONS)
def test_same_photo_same_pixels(style: str, method: str) -> None:
    first = render(photo("portrait"), style, method)
    again = render(photo("portrait").copy(), style, method)
    assert np.array_equal(first, again)
