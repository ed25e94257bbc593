"""Resizing and cropping for delivery: pure, ndarray in, ndarray out.

``fit``: ``inside`` scales to fit within the box (either side may be omitted), ``cover`` fills
the box and crops the overflow (where ``gravity`` decides what stays), ``contain`` fits inside
and pads to the exact box (transparent where the format has alpha, else white). Nothing is ever
enlarged: a source smaller than the box keeps its scale, and ``cover`` then keeps the box's
aspect ratio. Every output also stays within ``max_side`` and ``max_pixels``.

``gravity=smart`` centres the crop on the faces OpenCV's frontal-face Haar cascade finds (the
one the local AI provider uses); without faces, on the window holding the most edge energy,
a cheap saliency measure that keeps the subject rather than the sky or a blank wall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
import numpy.typing as npt

from backend.ai.providers.local import HaarCascade, find_face_cascade, load_cascade
from backend.delivery.signing import Fit, Gravity

Pixels = npt.NDArray[np.uint8]
Box = tuple[int, int, int, int]  # x, y, width, height

# Faces are looked for on a copy this long: a face of 1/8 of the picture is still 20 px, the
# cascade's window, and the numpy cascade takes 30-100 ms here rather than 250 ms at 256 px.
FACE_SIDE = 160
ENERGY_SIDE = 128


@dataclass(frozen=True)
class Spec:
    width: int | None
    height: int | None
    fit: Fit
    gravity: Gravity
    max_side: int
    max_pixels: int


def _cap(width: int, height: int, spec: Spec) -> float:
    return min(
        1.0, spec.max_side / max(width, height), math.sqrt(spec.max_pixels / (width * height))
    )


def _inside_scale(width: int, height: int, spec: Spec) -> float:
    scale = _cap(width, height, spec)
    if spec.width:
        scale = min(scale, spec.width / width)
    if spec.height:
        scale = min(scale, spec.height / height)
    return scale


def _cover_box(spec: Spec) -> tuple[int, int] | None:
    """The box a ``cover`` fills; None when nothing is cropped (``cover`` needs both sides)."""
    if spec.fit == "cover" and spec.width and spec.height:
        return spec.width, spec.height
    return None


def decode_side(width: int, height: int, spec: Spec) -> int:
    """The long side the decoder must deliver at least, from the source's displayed size, so
    that shrink-on-load never leaves fewer pixels than the output needs."""
    longest = max(width, height)
    box = _cover_box(spec)
    if box is not None:
        scale = min(1.0, max(box[0] / width, box[1] / height))
    else:
        scale = _inside_scale(width, height, spec)
    return max(1, math.ceil(longest * scale))


def output_size(width: int, height: int, spec: Spec) -> tuple[int, int]:
    """The size ``apply`` produces for a source of this size."""
    box = _cover_box(spec)
    if box is not None:
        scale = max(box[0] / width, box[1] / height)
        if scale <= 1:
            return box
        return _dims(box[0] / scale, box[1] / scale)
    scale = _inside_scale(width, height, spec)
    if spec.fit == "contain" and spec.width and spec.height:
        return spec.width, spec.height
    return _dims(width * scale, height * scale)


def _dims(w: float, h: float) -> tuple[int, int]:
    # The epsilon keeps an exact quotient (400.0 computed as 399.99999) from losing a pixel.
    return max(1, int(w + 1e-6)), max(1, int(h + 1e-6))


def apply(pixels: Pixels, spec: Spec, *, transparent: bool = False) -> Pixels:
    """``pixels`` (BGR or BGRA) resized, cropped or padded per ``spec``."""
    height, width = pixels.shape[:2]
    box = _cover_box(spec)
    if box is not None:
        scale = max(box[0] / width, box[1] / height)
        crop_w, crop_h = _dims(box[0] / scale, box[1] / scale)
        crop_w, crop_h = min(crop_w, width), min(crop_h, height)
        x, y = (
            smart_origin(pixels, crop_w, crop_h)
            if spec.gravity == "smart"
            else ((width - crop_w) // 2, (height - crop_h) // 2)
        )
        cropped = pixels[y : y + crop_h, x : x + crop_w]
        return _resize(cropped, output_size(width, height, spec))

    scale = _inside_scale(width, height, spec)
    resized = _resize(pixels, _dims(width * scale, height * scale))
    if spec.fit == "contain" and spec.width and spec.height:
        return _pad(resized, spec.width, spec.height, transparent=transparent)
    return resized


def _resize(pixels: Pixels, size: tuple[int, int]) -> Pixels:
    if (pixels.shape[1], pixels.shape[0]) == size:
        return np.ascontiguousarray(pixels)
    shrinking = size[0] <= pixels.shape[1] and size[1] <= pixels.shape[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(pixels, size, interpolation=interpolation), np.uint8)


def _pad(pixels: Pixels, width: int, height: int, *, transparent: bool) -> Pixels:
    h, w = pixels.shape[:2]
    if transparent and pixels.shape[2] == 3:
        pixels = np.asarray(cv2.cvtColor(pixels, cv2.COLOR_BGR2BGRA), np.uint8)
    channels = pixels.shape[2]
    fill = 0 if transparent else 255
    canvas = np.full((height, width, channels), fill, np.uint8)
    x, y = (width - w) // 2, (height - h) // 2
    canvas[y : y + h, x : x + w] = pixels
    return canvas


# --- smart gravity ---------------------------------------------------------------------------


@cache
def _cascade() -> HaarCascade | None:
    path = find_face_cascade()
    return load_cascade(path) if path is not None else None


def detect_faces(pixels: Pixels) -> list[Box]:
    """Frontal faces in source coordinates; empty without a cascade file."""
    cascade = _cascade()
    if cascade is None:
        return []
    height, width = pixels.shape[:2]
    factor = max(1.0, max(width, height) / FACE_SIDE)
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    small = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA) if factor > 1 else pixels
    code = cv2.COLOR_BGRA2GRAY if pixels.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    gray = np.asarray(cv2.equalizeHist(cv2.cvtColor(small, code)), np.uint8)
    return [
        (round(x * factor), round(y * factor), round(w * factor), round(h * factor))
        for x, y, w, h in cascade.detect(gray, scale=1.15, min_neighbors=3)
    ]


def smart_origin(pixels: Pixels, crop_w: int, crop_h: int) -> tuple[int, int]:
    """Top-left corner of the ``crop_w`` × ``crop_h`` window that keeps the subject."""
    height, width = pixels.shape[:2]
    faces = detect_faces(pixels)
    if faces:
        x0 = min(x for x, _, _, _ in faces)
        y0 = min(y for _, y, _, _ in faces)
        x1 = max(x + w for x, _, w, _ in faces)
        y1 = max(y + h for _, y, _, h in faces)
        if x1 - x0 > crop_w or y1 - y0 > crop_h:
            # All of them do not fit: keep the largest one.
            x0, y0, w, h = max(faces, key=lambda box: box[2] * box[3])
            x1, y1 = x0 + w, y0 + h
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return _clamp(cx - crop_w / 2, width - crop_w), _clamp(cy - crop_h / 2, height - crop_h)
    return _energy_origin(pixels, crop_w, crop_h)


def _clamp(value: float, upper: int) -> int:
    return int(min(max(0.0, round(value)), max(0, upper)))


def _energy_origin(pixels: Pixels, crop_w: int, crop_h: int) -> tuple[int, int]:
    """The window with the most gradient energy, searched on a small copy via an integral."""
    height, width = pixels.shape[:2]
    factor = max(1.0, max(width, height) / ENERGY_SIDE)
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    small = cv2.resize(pixels[:, :, :3], size, interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
    energy = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    energy = cv2.GaussianBlur(energy, (0, 0), 2.0)
    integral = cv2.integral(energy, sdepth=cv2.CV_64F)
    win_w = max(1, min(size[0], round(crop_w / factor)))
    win_h = max(1, min(size[1], round(crop_h / factor)))
    sums = (
        integral[win_h:, win_w:]
        - integral[:-win_h, win_w:]
        - integral[win_h:, :-win_w]
        + integral[:-win_h, :-win_w]
    )
    # Ties (a flat picture) go to the centre rather than the top-left corner.
    ys, xs = np.nonzero(sums >= sums.max() - 1e-6 * max(1.0, float(sums.max())))
    centre_y, centre_x = (sums.shape[0] - 1) / 2, (sums.shape[1] - 1) / 2
    best = int(np.argmin((ys - centre_y) ** 2 + (xs - centre_x) ** 2))
    return (
        _clamp(xs[best] * factor, width - crop_w),
        _clamp(ys[best] * factor, height - crop_h),
    )
