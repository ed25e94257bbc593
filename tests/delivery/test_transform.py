"""The pure parts of delivery: sizes, crops and smart gravity on real photographs."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from backend.delivery import transform
from backend.delivery.transform import Spec
from tests.photos import PHOTO, PORTRAIT


def spec(width: int | None, height: int | None, fit: str = "inside", **kw: object) -> Spec:
    values: dict[str, object] = {"gravity": "center", "max_side": 4096, "max_pixels": 16_000_000}
    values.update(kw)
    return Spec(width, height, fit, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("source", "box", "expected"),
    [
        ((4000, 3000), spec(400, None), (400, 300)),
        ((4000, 3000), spec(None, 300), (400, 300)),
        ((4000, 3000), spec(400, 400), (400, 300)),
        ((4000, 3000), spec(400, 400, "cover"), (400, 400)),
        ((4000, 3000), spec(400, 100, "contain"), (400, 100)),
        ((4000, 3000), spec(400, None, "cover"), (400, 300)),  # cover needs both sides
        ((300, 200), spec(600, 600, "cover"), (200, 200)),  # never enlarged, aspect kept
        ((300, 200), spec(600, None), (300, 200)),
        ((8000, 2000), spec(None, None, max_side=1000), (1000, 250)),
        ((4000, 4000), spec(None, None, max_pixels=1_000_000), (1000, 1000)),
    ],
)
def test_output_size(source: tuple[int, int], box: Spec, expected: tuple[int, int]) -> None:
    assert transform.output_size(*source, box) == expected
    pixels = np.zeros((source[1], source[0], 3), dtype=np.uint8)
    out = transform.apply(pixels, box)
    assert (out.shape[1], out.shape[0]) == expected


@pytest.mark.parametrize(
    ("box", "side"),
    [
        (spec(400, None), 400),
        (spec(400, 400, "cover"), 534),  # the short side must reach 400
        (spec(None, None), 4000),
        (spec(8000, None), 4000),
    ],
)
def test_decode_side_leaves_enough_pixels(box: Spec, side: int) -> None:
    assert transform.decode_side(4000, 3000, box) == side


def _read(path: object) -> npt.NDArray[np.uint8]:
    pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert pixels is not None, path
    return np.asarray(pixels, dtype=np.uint8)


def _crop_x(source: np.ndarray, out: np.ndarray, crop: tuple[int, int]) -> int:
    """Where in ``source`` the output was cropped from, found by template matching."""
    back = cv2.resize(out, crop, interpolation=cv2.INTER_CUBIC)
    scores = cv2.matchTemplate(
        cv2.cvtColor(source, cv2.COLOR_BGR2GRAY),
        cv2.cvtColor(back, cv2.COLOR_BGR2GRAY),
        cv2.TM_CCOEFF_NORMED,
    )
    return int(cv2.minMaxLoc(scores)[3][0])


def test_smart_crop_keeps_the_face() -> None:
    portrait = _read(PORTRAIT)
    (fx, _, fw, _), *_ = transform.detect_faces(portrait)
    height, width = portrait.shape[:2]
    box = (80, 400)
    crop = (round(box[0] * height / box[1]), height)

    smart = transform.apply(portrait, spec(*box, "cover", gravity="smart"))
    assert (smart.shape[1], smart.shape[0]) == box
    x = _crop_x(portrait, smart, crop)
    assert x <= fx
    assert fx + fw <= x + crop[0]
    # The centre crop cuts this face: the test tells the two gravities apart.
    centre = transform.apply(portrait, spec(*box, "cover"))
    x = _crop_x(portrait, centre, crop)
    assert x == (width - crop[0]) // 2
    assert not (x <= fx and fx + fw <= x + crop[0])


def test_without_faces_the_crop_follows_the_detail() -> None:
    # Flat grey with the real photograph pasted at the right: the crop goes there.
    photo = _read(PHOTO)
    patch = cv2.resize(photo, (300, 300), interpolation=cv2.INTER_AREA)
    canvas = np.full((300, 1200, 3), 128, np.uint8)
    canvas[:, 880:1180] = patch
    assert transform.detect_faces(canvas) == []
    x, y = transform.smart_origin(canvas, 300, 300)
    assert y == 0
    assert 830 <= x <= 900
    # A picture with nothing in it keeps the centre.
    assert transform.smart_origin(np.full((300, 1200, 3), 128, np.uint8), 300, 300) == (450, 0)


def test_contain_pads_transparent_or_white() -> None:
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    clear = transform.apply(pixels, spec(200, 200, "contain"), transparent=True)
    assert clear.shape == (200, 200, 4)
    assert clear[0, 0, 3] == 0
    assert clear[100, 100, 3] == 255
    white = transform.apply(pixels, spec(200, 200, "contain"))
    assert white.shape == (200, 200, 3)
    assert white[0, 0].tolist() == [255, 255, 255]
    assert white[100, 100].tolist() == [0, 0, 0]
