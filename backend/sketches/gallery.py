"""Contact sheets and style previews, drawn with the styles of ``backend.sketches.styles``.

Pure: arrays or style names in, arrays or PNG bytes out. The preview photograph ships in
``backend/sketches/assets/`` (provenance in its README).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from backend.sketches.styles import METHODS, STYLES, Pixels, encode, load, render

SAMPLE = Path(__file__).parent / "assets" / "sample.jpg"

_BACKGROUND = 255
_CARD = 244
_INK = (40, 40, 40)
_MUTED = (110, 110, 110)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def contact_sheet(image_bgr: Pixels, *, cell: int = 320) -> Pixels:
    """All 21 style × method renderings of one image on a labelled BGR grid.

    The top-left cell is the original, the top row names the methods, the left column names
    the styles. Each result is drawn at twice the cell size and then shrunk, so textures and
    strokes look as they would on a full picture viewed small.
    """
    if not 64 <= cell <= 2048:
        raise ValueError("cell must be from 64 to 2048 pixels")
    source = _fit(_bgr(image_bgr), 2 * cell)
    gap = max(4, cell // 32)
    cols, rows = 1 + len(METHODS), 1 + len(STYLES)
    sheet = np.full(
        (rows * cell + (rows + 1) * gap, cols * cell + (cols + 1) * gap, 3),
        _BACKGROUND,
        np.uint8,
    )

    def place(row: int, col: int, tile: Pixels) -> None:
        y, x = gap + row * (cell + gap), gap + col * (cell + gap)
        sheet[y : y + cell, x : x + cell] = tile

    place(0, 0, _labelled(_cell(source, cell), "original"))
    for col, info in enumerate(METHODS.values(), start=1):
        place(0, col, _card(cell, info.name, info.description))
    for row, style in enumerate(STYLES.values(), start=1):
        place(row, 0, _card(cell, style.name, style.description))
        for col, method in enumerate(METHODS, start=1):
            drawn = render(source, style.id, method)
            place(row, col, _labelled(_cell(_bgr(drawn), cell), f"{style.id} / {method}"))
    return sheet


@lru_cache(maxsize=64)
def preview(style: str, *, side: int = 160) -> bytes:
    """A small PNG of ``style`` (method basic, default parameters) from the bundled sample."""
    if style not in STYLES:
        # Same message and type as render() gives, before any decoding work.
        render(np.zeros((1, 1), np.uint8), style, "basic")
    if not 16 <= side <= 1024:
        raise ValueError("side must be from 16 to 1024 pixels")
    # Drawn at twice the size and shrunk, as in the contact sheet: at 160 px the strokes
    # and grain would otherwise be as coarse as the picture itself.
    drawn = render(load(SAMPLE.read_bytes(), max_side=2 * side), style, "basic")
    return encode(_fit(drawn, side), "png")


def _bgr(image: Pixels) -> Pixels:
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), np.uint8)
    if image.shape[2] == 4:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), np.uint8)
    return image


def _fit(image: Pixels, side: int) -> Pixels:
    h, w = image.shape[:2]
    scale = side / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)


def _cell(image: Pixels, cell: int) -> Pixels:
    """``image`` fitted (never enlarged past the cell) and centred on a cell-sized card."""
    h, w = image.shape[:2]
    scale = cell / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    fitted = np.asarray(cv2.resize(image, size, interpolation=interpolation), np.uint8)
    tile = np.full((cell, cell, 3), _CARD, np.uint8)
    y, x = (cell - size[1]) // 2, (cell - size[0]) // 2
    tile[y : y + size[1], x : x + size[0]] = fitted
    return tile


def _font_scale(cell: int) -> float:
    return max(0.3, cell / 560)


def _labelled(tile: Pixels, label: str) -> Pixels:
    """A caption on a white band at the bottom of the tile, readable over any picture."""
    scale = _font_scale(tile.shape[0])
    thickness = max(1, round(scale * 1.6))
    (tw, th), base = cv2.getTextSize(label, _FONT, scale, thickness)
    pad = max(3, th // 2)
    band = th + base + 2 * pad
    out = tile.copy()
    out[-band:, : tw + 2 * pad] = _BACKGROUND
    cv2.putText(
        out, label, (pad, out.shape[0] - pad - base), _FONT, scale, _INK, thickness, cv2.LINE_AA
    )
    return out


def _card(cell: int, title: str, text: str) -> Pixels:
    """A text card: a title and a description wrapped to the cell's width."""
    card = np.full((cell, cell, 3), _CARD, np.uint8)
    scale = _font_scale(cell)
    margin = max(6, cell // 16)
    title_scale = scale * 1.6
    thickness = max(1, round(title_scale * 1.5))
    (_, th), _ = cv2.getTextSize(title, _FONT, title_scale, thickness)
    y = margin + th
    cv2.putText(card, title, (margin, y), _FONT, title_scale, _INK, thickness, cv2.LINE_AA)
    y += th
    body = max(1, round(scale * 1.3))
    for line in _wrap(text, cell - 2 * margin, scale, body):
        (_, lh), _ = cv2.getTextSize(line, _FONT, scale, body)
        y += int(lh * 1.8)
        if y > cell - margin:
            break
        cv2.putText(card, line, (margin, y), _FONT, scale, _MUTED, body, cv2.LINE_AA)
    return card


def _wrap(text: str, width: int, scale: float, thickness: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and cv2.getTextSize(candidate, _FONT, scale, thickness)[0][0] > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines
