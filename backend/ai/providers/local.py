"""The offline provider: a plain description of the image, and a fixed set of local edits.

Captions are built from measurements, not recognition: size and orientation, the named colours
that cover most of the picture, brightness and contrast, frontal faces found by OpenCV's Haar
cascade, and whether the layout looks like a page of text. They say only what those
measurements support, which is why ``caption_model`` is ``"local"``.

Edits understand a short list of instructions (see ``SUPPORTED_EDITS``). A prompt with any word
outside that list and a few connecting words is refused with ``ai.unsupported_edit`` rather
than half done: "make it a watercolor postcard" is not a watercolor.

Faces. OpenCV 5 moved the cascade classifier out of the main modules, so the
``opencv-python-headless`` wheel has neither ``cv2.CascadeClassifier`` nor the cascade files.
The files come from Debian's ``opencv-data`` package (or any of ``CASCADE_DIRS``), and
``HaarCascade`` below evaluates them: integral images, the cascade's stages in order over all
windows of an image pyramid at once with numpy, then the neighbour grouping that
``detectMultiScale`` applies. Compared with OpenCV's own classifier (from the contrib wheel) on
the test photos, it found the same boxes. Without a cascade file, captions say faces were not
checked.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import structlog

from backend.ai.providers.base import (
    BAD_IMAGE,
    UNSUPPORTED_EDIT,
    Capabilities,
    Caption,
    ProviderError,
)
from backend.core.pixels import run_pixels
from backend.imaging.decode import DEFAULT_MAX_PIXELS, decode_probed, fit_size, probe
from backend.sketches.styles import STYLES, encode, load, render

log = structlog.get_logger(__name__)

Pixels = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]
Box = tuple[int, int, int, int]

LOCAL_MODEL = "local"

# --- where the face cascade comes from -------------------------------------------------------

# "alt" rather than "default": on the test photos default also found faces in clouds and
# gave counts that changed with the pyramid step; alt was right at every setting tried.
FACE_CASCADE_FILE = "haarcascade_frontalface_alt.xml"
# opencv-python 4.x wheels ship the cascades in cv2.data; the 5.x ones leave that folder empty.
_WHEEL_CASCADES: str | None = getattr(getattr(cv2, "data", None), "haarcascades", None)
CASCADE_DIRS: tuple[Path, ...] = (
    Path(__file__).resolve().parent.parent / "assets",
    *([Path(_WHEEL_CASCADES)] if _WHEEL_CASCADES else []),
    Path("/usr/share/opencv4/haarcascades"),  # Debian and Ubuntu: opencv-data
    Path("/usr/share/opencv/haarcascades"),
    Path("/usr/local/share/opencv4/haarcascades"),  # OpenCV built from source
)


def find_face_cascade(dirs: Iterable[Path] = CASCADE_DIRS) -> Path | None:
    for folder in dirs:
        candidate = folder / FACE_CASCADE_FILE
        if candidate.is_file():
            return candidate
    return None


# --- captions --------------------------------------------------------------------------------

# Analysis runs on a copy this long on its longer side: enough for faces of about 1/30 of it.
_ANALYSIS_SIDE = 640
_COLOUR_SIDE = 64
_COLOUR_MIN_SHARE = 0.10
_MOSTLY_SHARE = 0.60

# Anchors per colour name in RGB; a pixel takes the name of its nearest anchor in CIELAB, where
# distance follows perceived difference, so "brown" and "orange" split where people split them.
_PALETTE: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((255, 0, 0), (200, 30, 30), (230, 60, 50), (150, 20, 25)),
    "orange": ((255, 165, 0), (240, 130, 30), (255, 140, 80)),
    "yellow": ((255, 255, 0), (245, 215, 40), (240, 230, 120)),
    "green": (
        (0, 255, 0),
        (0, 128, 0),
        (50, 150, 50),
        (120, 190, 70),
        (30, 90, 40),
        (110, 120, 40),
    ),
    "teal": ((0, 255, 255), (0, 140, 140), (60, 200, 200)),
    "blue": (
        (0, 0, 255),
        (40, 80, 200),
        (100, 150, 220),
        (20, 40, 110),
        (0, 0, 128),
        (150, 190, 235),
    ),
    "purple": ((128, 0, 128), (110, 50, 150), (170, 120, 200), (75, 0, 130)),
    "pink": ((255, 0, 255), (240, 150, 180), (220, 70, 150), (255, 190, 200)),
    "brown": ((120, 70, 30), (80, 50, 30), (170, 120, 80), (190, 150, 110)),
    "black": ((0, 0, 0), (35, 35, 40)),
    "gray": ((128, 128, 128), (80, 80, 80), (180, 180, 180)),
    "white": ((255, 255, 255), (230, 230, 225)),
}
COLOUR_NAMES = tuple(_PALETTE)


def _lab(rgb: npt.NDArray[np.float32]) -> Floats:
    """CIELAB of float RGB in 0..1, shaped (..., 3)."""
    bgr = np.ascontiguousarray(rgb[..., ::-1], dtype=np.float32).reshape(-1, 1, 3)
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB), np.float32).reshape(-1, 3)


_ANCHOR_NAMES = np.array([i for i, anchors in enumerate(_PALETTE.values()) for _ in anchors])
_ANCHOR_LAB = _lab(
    np.array([rgb for anchors in _PALETTE.values() for rgb in anchors], np.float32) / 255.0
)


@dataclass(frozen=True)
class ImageFacts:
    """What the local caption is built from; all measured on a reduced, upright copy."""

    width: int
    height: int
    orientation: str  # "landscape", "portrait", "square" or "panoramic"
    size_class: str  # "small", "medium" or "large"
    colours: tuple[tuple[str, float], ...]  # (name, share of pixels), largest first
    brightness: float  # mean CIELAB lightness, 0..1
    contrast: float  # luminance standard deviation, 0..1
    photo: bool  # textured and many-coloured, unlike flat artwork
    faces: int | None  # None when no face cascade was available
    text_lines: int
    document: bool  # lines of dark text on a mostly light, colourless page

    @property
    def tone_words(self) -> list[str]:
        words = []
        if self.brightness < 0.3:
            words.append("dark")
        elif self.brightness > 0.7:
            words.append("bright")
        if self.contrast < 0.12:
            words.append("low-contrast")
        elif self.contrast > 0.3:
            words.append("high-contrast")
        return words


def _unreadable(exc: Exception) -> ProviderError:
    return ProviderError(f"The image cannot be read: {exc}", code=BAD_IMAGE)


def analyse(
    data: bytes, cascade: HaarCascade | None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> ImageFacts:
    """Measure an encoded image; ai.bad_image when it cannot be decoded."""
    try:
        header = probe(data, max_pixels=max_pixels)
        pixels = decode_probed(data, header, max_side=_ANALYSIS_SIDE)
    except ValueError as exc:
        raise _unreadable(exc) from exc
    width, height = header.width, header.height
    gray = np.asarray(cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY), np.uint8)

    colours, lightness, distinct = _colours(pixels)
    lines = count_text_lines(gray)
    light = float(np.mean(gray > 190))
    greyish = sum(share for name, share in colours if name in ("white", "gray", "black"))
    faces = None
    if cascade is not None:
        faces = len(cascade.detect(np.asarray(cv2.equalizeHist(gray), np.uint8)))
    return ImageFacts(
        width=width,
        height=height,
        orientation=_orientation(width, height),
        size_class=_size_class(width, height),
        colours=colours,
        brightness=lightness,
        contrast=float(gray.std()) / 255.0,
        photo=distinct >= 100 and _flat_share(gray) < 0.6,
        faces=faces,
        text_lines=lines,
        document=lines >= 3 and light >= 0.5 and greyish >= 0.8,
    )


def describe(facts: ImageFacts) -> str:
    """One sentence from the measurements, e.g. "A small square photo in gray and black, …"."""
    if facts.document:
        noun = "document page with lines of text"
    else:
        noun = "photo" if facts.photo else "image"
    sentence = f"A {facts.size_class} {facts.orientation} {noun}"

    names = [name for name, share in facts.colours if share >= _COLOUR_MIN_SHARE][:3]
    if names and facts.colours[0][1] >= _MOSTLY_SHARE:
        sentence += f", mostly {names[0]}"
        if len(names) > 1:
            sentence += f" with some {_join(names[1:])}"
    elif names:
        sentence += f" in {_join(names)}"
    if facts.tone_words:
        sentence += ", " + " and ".join(facts.tone_words)
    if not facts.document and facts.text_lines >= 3:
        sentence += ", with some text"

    if facts.faces is None:
        sentence += "; faces not checked"
    elif facts.faces == 0:
        sentence += "; no faces detected"
    elif facts.faces == 1:
        sentence += "; one face detected"
    else:
        sentence += f"; {facts.faces} faces detected"
    return sentence + "."


def _join(words: Sequence[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _orientation(width: int, height: int) -> str:
    ratio = width / height
    if ratio >= 2.2:
        return "panoramic"
    if ratio > 1.1:
        return "landscape"
    if ratio < 1 / 1.1:
        return "portrait"
    return "square"


def _size_class(width: int, height: int) -> str:
    megapixels = width * height / 1e6
    if megapixels < 0.5:
        return "small"
    if megapixels < 4.0:
        return "medium"
    return "large"


def _colours(pixels: Pixels) -> tuple[tuple[tuple[str, float], ...], float, int]:
    """(name, share) of every palette colour present, largest first; the mean CIELAB lightness
    (0..1), which unlike luma calls pure red and blue mid-tones rather than dark; and how many
    distinct colours there are at five bits per channel."""
    size = fit_size(pixels.shape[1], pixels.shape[0], _COLOUR_SIDE)
    small = np.asarray(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA), np.uint8)
    rgb = small[..., ::-1].reshape(-1, 3).astype(np.float32) / 255.0
    lab = _lab(rgb)
    distances = ((lab[:, None, :] - _ANCHOR_LAB[None, :, :]) ** 2).sum(axis=2)
    names = _ANCHOR_NAMES[np.argmin(distances, axis=1)]
    counts = np.bincount(names, minlength=len(COLOUR_NAMES)) / names.size
    order = np.argsort(-counts, kind="stable")
    shares = tuple((COLOUR_NAMES[i], float(counts[i])) for i in order if counts[i] > 0)
    quantised = (small >> 3).reshape(-1, 3).astype(np.int32)
    distinct = len(np.unique(quantised[:, 0] << 10 | quantised[:, 1] << 5 | quantised[:, 2]))
    return shares, float(lab[:, 0].mean()) / 100.0, distinct


def _flat_share(gray: Pixels) -> float:
    """Share of pixels whose neighbourhood is flat: most of a drawing, little of a photo, whose
    sensor noise and texture leave almost nothing perfectly even."""
    curvature = np.abs(np.asarray(cv2.Laplacian(gray, cv2.CV_16S), np.int16))
    return float(np.mean(curvature <= 1))


def count_text_lines(gray: Pixels) -> int:
    """How many horizontal runs of small dark marks (lines of text) the image holds.

    Dark detail is isolated with a black-hat (dark marks smaller than the kernel, on a lighter
    surround), neighbouring marks are merged sideways, and a merged blob counts as a line when it
    is long, thin and mostly filled, the shape a line of words has and a photo edge rarely does.
    """
    height, width = gray.shape
    glyph = max(3, round(min(height, width) / 40))
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (glyph * 3, glyph * 2))
    marks = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel)
    _, ink = cv2.threshold(marks, 60, 255, cv2.THRESH_BINARY)
    merged = cv2.morphologyEx(
        ink, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (glyph * 2, 1))
    )
    count, _, stats, _ = cv2.connectedComponentsWithStats(merged, connectivity=8)
    lines = 0
    for _, _, w, h, area in stats[1:count]:
        if w >= 0.15 * width and 2 <= h <= 0.12 * height and w >= 5 * h and area >= 0.3 * w * h:
            lines += 1
    return lines


# --- faces: OpenCV's Haar cascade format, evaluated with numpy ------------------------------


@dataclass(frozen=True)
class _Stage:
    threshold: float
    node_thresholds: Floats  # (n,) one per weak classifier (a decision stump)
    below: Floats  # (n,) vote when the feature is under the node threshold
    above: Floats  # (n,)
    rects: npt.NDArray[np.int64]  # (r, 4) x, y, w, h of every rectangle of every feature
    weights: Floats  # (r,)
    starts: npt.NDArray[np.intp]  # where each weak classifier's rectangles begin in ``rects``


class HaarCascade:
    """A stump-based Haar cascade in OpenCV's XML format, run as ``detectMultiScale`` runs it.

    The pyramid shrinks the image by ``scale`` per level and slides the model's window over
    every level (every second pixel up to a 2x reduction, every pixel beyond); a window is
    normalised by the standard deviation of its inner area, windows with almost no variance are
    skipped, and a window is a hit when it passes every stage. Hits are then grouped.
    """

    def __init__(self, window: tuple[int, int], stages: Sequence[_Stage]) -> None:
        self.window = window
        self.stages = tuple(stages)

    @classmethod
    def load(cls, path: Path) -> HaarCascade:
        root = ET.parse(path).getroot()
        cascade = root.find("cascade")
        if cascade is None or cascade.findtext("featureType", "").strip() != "HAAR":
            raise ValueError(f"{path} is not a Haar cascade in OpenCV's current XML format")
        window = (int(cascade.findtext("width", "0")), int(cascade.findtext("height", "0")))
        features = [
            [[float(v) for v in (rect.text or "").split()] for rect in feature.iterfind("rects/_")]
            for feature in cascade.iterfind("features/_")
        ]
        if any(
            rect_feature.findtext("tilted", "0").strip() not in ("0", "")
            for rect_feature in cascade.iterfind("features/_")
        ):
            raise ValueError(f"{path} uses tilted features, which are not supported")
        stages = []
        for stage in cascade.iterfind("stages/_"):
            thresholds: list[float] = []
            below: list[float] = []
            above: list[float] = []
            rects: list[tuple[int, int, int, int]] = []
            weights: list[float] = []
            starts: list[int] = []
            for weak in stage.iterfind("weakClassifiers/_"):
                nodes = (weak.findtext("internalNodes") or "").split()
                leaves = [float(v) for v in (weak.findtext("leafValues") or "").split()]
                if len(nodes) != 4 or len(leaves) != 2:
                    raise ValueError(f"{path}: only stump cascades are supported")
                thresholds.append(float(nodes[3]))
                below.append(leaves[0])
                above.append(leaves[1])
                starts.append(len(rects))
                for x, y, w, h, weight in features[int(nodes[2])]:
                    rects.append((int(x), int(y), int(w), int(h)))
                    weights.append(weight)
            stages.append(
                _Stage(
                    threshold=float(stage.findtext("stageThreshold", "0")),
                    node_thresholds=np.array(thresholds, np.float32),
                    below=np.array(below, np.float32),
                    above=np.array(above, np.float32),
                    rects=np.array(rects, np.int64).reshape(-1, 4),
                    weights=np.array(weights, np.float32),
                    starts=np.array(starts, np.intp),
                )
            )
        if not stages or min(window) < 4:
            raise ValueError(f"{path}: no stages or no window size")
        return cls(window, stages)

    def detect(
        self,
        gray: Pixels,
        *,
        scale: float = 1.1,
        min_neighbors: int = 4,
        min_size: int = 0,
    ) -> list[Box]:
        """Boxes (x, y, w, h) of the objects found in a gray image."""
        height, width = gray.shape
        win_w, win_h = self.window
        hits: list[Box] = []
        factor = 1.0
        while True:
            box_w, box_h = round(win_w * factor), round(win_h * factor)
            level_w, level_h = round(width / factor), round(height / factor)
            if box_w > width or box_h > height or level_w <= win_w + 1 or level_h <= win_h + 1:
                break
            if box_w >= min_size and box_h >= min_size:
                level = gray
                if factor > 1.0:
                    level = np.asarray(
                        cv2.resize(gray, (level_w, level_h), interpolation=cv2.INTER_LINEAR),
                        np.uint8,
                    )
                step = 2 if factor <= 2.0 else 1
                for x, y in self._scan(level, step):
                    hits.append((round(x * factor), round(y * factor), box_w, box_h))
            factor *= scale
        return group_boxes(hits, min_neighbors)

    def _scan(self, level: Pixels, step: int) -> list[tuple[int, int]]:
        height, width = level.shape
        win_w, win_h = self.window
        sums, squares = cv2.integral2(level, sdepth=cv2.CV_32S, sqdepth=cv2.CV_64F)
        stride = width + 1
        # A window at (x, y) must leave one pixel to its right and below, as OpenCV's does.
        xs = np.arange(0, width - win_w, step)
        ys = np.arange(0, height - win_h, step)
        origins = (ys[:, None] * stride + xs[None, :]).ravel()

        inner = (win_w - 2) * (win_h - 2)
        total = _box_sums(sums.ravel(), origins, stride, np.array([[1, 1, win_w - 2, win_h - 2]]))
        total_sq = _box_sums(
            squares.ravel(), origins, stride, np.array([[1, 1, win_w - 2, win_h - 2]])
        )
        spread = inner * total_sq[0] - total[0].astype(np.float64) ** 2
        # Flat windows (luminance deviation of about 10 levels or less) hold no face.
        keep = spread > (10.0 * inner) ** 2
        origins = origins[keep]
        norm = (1.0 / np.sqrt(spread[keep])).astype(np.float32)

        flat = sums.ravel()
        for stage in self.stages:
            if origins.size == 0:
                return []
            # Windows in chunks: a late stage has hundreds of rectangles, and a busy picture can
            # keep thousands of windows alive that long; this caps each temporary at ~32 MB.
            chunk = max(256, _GATHER_LIMIT // len(stage.rects))
            passed = np.concatenate(
                [
                    _votes(stage, flat, origins[i : i + chunk], norm[i : i + chunk], stride)
                    >= stage.threshold
                    for i in range(0, origins.size, chunk)
                ]
            )
            origins, norm = origins[passed], norm[passed]
        rows, cols = np.divmod(origins, stride)
        return list(zip(cols.tolist(), rows.tolist(), strict=True))


_GATHER_LIMIT = 4_000_000


def _votes(
    stage: _Stage,
    integral: npt.NDArray[np.generic],
    origins: npt.NDArray[np.intp],
    norm: Floats,
    stride: int,
) -> Floats:
    """The stage's summed votes for each window."""
    values = _box_sums(integral, origins, stride, stage.rects).astype(np.float32)
    values *= stage.weights[:, None]
    features = np.add.reduceat(values, stage.starts, axis=0) * norm[None, :]
    return np.asarray(
        np.where(
            features < stage.node_thresholds[:, None],
            stage.below[:, None],
            stage.above[:, None],
        ).sum(axis=0),
        np.float32,
    )


def _box_sums(
    integral: npt.NDArray[np.generic],
    origins: npt.NDArray[np.intp],
    stride: int,
    rects: npt.NDArray[np.int64],
) -> npt.NDArray[np.generic]:
    """Pixel sums of each rectangle (rows) at each window origin (columns)."""
    x, y, w, h = rects.T
    top_left = (y * stride + x)[:, None]
    bottom_left = ((y + h) * stride + x)[:, None]
    at = origins[None, :]
    return np.asarray(
        integral[at + bottom_left + w[:, None]]
        - integral[at + top_left + w[:, None]]
        - integral[at + bottom_left]
        + integral[at + top_left]
    )


def group_boxes(boxes: Sequence[Box], min_neighbors: int, eps: float = 0.2) -> list[Box]:
    """Merge overlapping hits as ``detectMultiScale`` does and keep well-supported groups.

    Boxes whose edges all lie within ``eps`` of their size of each other join one group; a
    group needs more than ``min_neighbors`` members, becomes its average box, and is dropped
    when it sits inside a larger group that has more support.
    """
    if not boxes:
        return []
    arr = np.array(boxes, np.float64)
    x, y, w, h = arr.T
    right, bottom = x + w, y + h
    parent = list(range(len(boxes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Row by row rather than one n×n matrix: a busy picture can leave thousands of hits.
    for i in range(len(boxes) - 1):
        rest = slice(i + 1, None)
        tolerance = eps * 0.5 * (np.minimum(w[i], w[rest]) + np.minimum(h[i], h[rest]))
        close = (
            (np.abs(x[rest] - x[i]) <= tolerance)
            & (np.abs(y[rest] - y[i]) <= tolerance)
            & (np.abs(right[rest] - right[i]) <= tolerance)
            & (np.abs(bottom[rest] - bottom[i]) <= tolerance)
        )
        for j in (np.flatnonzero(close) + i + 1).tolist():
            a, b = root(i), root(j)
            if a != b:
                parent[a] = b
    labels = np.array([root(i) for i in range(len(boxes))])
    groups = [
        (arr[labels == label].mean(axis=0), int((labels == label).sum()))
        for label in np.unique(labels)
    ]
    strong = [(box, n) for box, n in groups if n > min_neighbors]

    found: list[Box] = []
    for index, (box, n) in enumerate(strong):
        inside_better = False
        for other_index, (other, m) in enumerate(strong):
            if other_index == index:
                continue
            dx, dy = other[2] * eps, other[3] * eps
            if (
                box[0] >= other[0] - dx
                and box[1] >= other[1] - dy
                and box[0] + box[2] <= other[0] + other[2] + dx
                and box[1] + box[3] <= other[1] + other[3] + dy
                and (m > max(3, n) or n < 3)
            ):
                inside_better = True
                break
        if not inside_better:
            left, top, width, height = (int(round(float(v))) for v in box)
            found.append((left, top, width, height))
    return found


@lru_cache(maxsize=4)
def load_cascade(path: Path) -> HaarCascade:
    return HaarCascade.load(path)


# --- edits -----------------------------------------------------------------------------------

SUPPORTED_EDITS = (
    "grayscale (or black and white)",
    "sepia",
    "blur",
    "sharpen",
    "brighten (or lighter)",
    "darken (or darker)",
    "invert",
    *(f"{style} (sketch or painting)" for style in STYLES),
)

_OPERATIONS: dict[str, str] = {
    **dict.fromkeys(("grayscale", "greyscale", "monochrome", "desaturate"), "grayscale"),
    "sepia": "sepia",
    **dict.fromkeys(("blur", "blurry", "blurred", "blurrier"), "blur"),
    **dict.fromkeys(("sharpen", "sharper", "sharpened"), "sharpen"),
    **dict.fromkeys(("brighten", "brighter", "lighten", "lighter"), "brighten"),
    **dict.fromkeys(("darken", "darker"), "darken"),
    **dict.fromkeys(("invert", "inverted", "negative"), "invert"),
}
_STYLE_WORDS = {style: style for style in STYLES} | {"watercolour": "watercolor"}
_ARTISTIC_WORDS = frozenset({"artistic", "detailed"})
# Words that connect or soften instructions without asking for anything of their own.
_FILLER = frozenset(
    """
    a an the it its it's this that image photo picture pic make turn convert apply add give render
    into to as in of and then also with style styled sketch sketched drawing painting painted
    effect filter look like version please me my bit little slightly more much very lot some
    somewhat too after afterwards finally first next colors colours color colour tone toned
    i i'd i'm we you your just tad now for ok okay hi hello hey pls plz kindly thanks thx
    """.split()
)
_PHRASES = (
    # Politeness around the request: "could you please …, thank you!" asks for nothing itself.
    (
        re.compile(
            r"\b(?:thank\s+you(?:\s+(?:so|very)\s+much)?|many\s+thanks|thanks\s+a\s+lot"
            r"|(?:could|would|can|will)\s+you|i\s+(?:would|'d|’d)\s+like"
            r"|if\s+you\s+(?:can|could|don['’]t\s+mind)|a\s+(?:bit|little|tad)|for\s+me)\b"
        ),
        " ",
    ),
    (re.compile(r"\bblack\s*(?:and|&|-and-|-|/)\s*white\b|\bb\s*[&/]\s*w\b"), " grayscale "),
    (re.compile(r"\bwater\s+colou?r\b"), " watercolor "),
    (re.compile(r"\bgr[ae]y\s*-?\s*scale\b"), " grayscale "),
)
_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")


@dataclass(frozen=True)
class EditStep:
    operation: str  # one of _OPERATIONS' values, or "style"
    style: str | None = None
    method: str = "basic"


LOCAL_CAPABILITIES = Capabilities(
    caption=True, edit=True, reference_image=False, edits=SUPPORTED_EDITS
)
REFERENCE_REFUSAL = "The local provider can't use a reference image."


def unsupported_message(unknown: Sequence[str] = ()) -> str:
    """What an end user reads when the local provider refuses an edit: short, with examples."""
    said = ""
    if unknown:
        said = f" (it doesn't know {', '.join(repr(w) for w in unknown[:5])})"
    return (
        f"The local provider can't make this edit{said}. Try grayscale, sepia, blur, sharpen, "
        f"brighten, darken, invert, or a {'/'.join(STYLES)} sketch."
    )


def parse_edit(prompt: str) -> list[EditStep]:
    """The local steps a prompt asks for, in prompt order; raises ai.unsupported_edit."""
    text = prompt.lower()
    for pattern, replacement in _PHRASES:
        text = pattern.sub(replacement, text)
    words = _WORD.findall(text)
    method = "artistic" if _ARTISTIC_WORDS.intersection(words) else "basic"
    steps: list[EditStep] = []
    unknown: list[str] = []
    for word in words:
        if word in _OPERATIONS:
            steps.append(EditStep(_OPERATIONS[word]))
        elif word in _STYLE_WORDS:
            steps.append(EditStep("style", style=_STYLE_WORDS[word], method=method))
        elif word not in _FILLER and word not in _ARTISTIC_WORDS and word not in unknown:
            unknown.append(word)
    if unknown or not steps:
        raise ProviderError(unsupported_message(unknown), code=UNSUPPORTED_EDIT)
    return steps


_SEPIA_BGR = np.array(
    [[0.131, 0.534, 0.272], [0.168, 0.686, 0.349], [0.189, 0.769, 0.393]], np.float32
)


def _gamma_table(gamma: float) -> Pixels:
    levels = np.arange(256, dtype=np.float64) / 255.0
    return np.clip(np.round(255.0 * levels**gamma), 0, 255).astype(np.uint8)


_BRIGHTEN = _gamma_table(0.7)
_DARKEN = _gamma_table(1.45)


def apply_step(image: Pixels, step: EditStep) -> Pixels:
    """One step on BGR pixels; returns BGR pixels of the same size."""
    long_side = max(image.shape[:2])
    if step.operation == "grayscale":
        out = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    elif step.operation == "sepia":
        out = np.clip(cv2.transform(image.astype(np.float32), _SEPIA_BGR), 0, 255)
    elif step.operation == "blur":
        out = cv2.GaussianBlur(image, (0, 0), sigmaX=max(1.5, long_side / 250))
    elif step.operation == "sharpen":
        soft = cv2.GaussianBlur(image, (0, 0), sigmaX=max(1.0, long_side / 800))
        out = cv2.addWeighted(image, 2.0, soft, -1.0, 0)
    elif step.operation == "brighten":
        out = cv2.LUT(image, _BRIGHTEN)
    elif step.operation == "darken":
        out = cv2.LUT(image, _DARKEN)
    elif step.operation == "invert":
        out = cv2.bitwise_not(image)
    elif step.operation == "style" and step.style is not None:
        out = render(image, step.style, step.method)
        if out.ndim == 2:
            out = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
    else:
        raise ValueError(f"unknown edit step {step!r}")
    return np.ascontiguousarray(out, dtype=np.uint8)


def edit_image(
    data: bytes, steps: Sequence[EditStep], max_side: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> bytes:
    """PNG bytes of ``data`` (upright, at most ``max_side``) with ``steps`` applied in order."""
    try:
        image = load(data, max_side=max_side, max_pixels=max_pixels)
    except ValueError as exc:
        raise _unreadable(exc) from exc
    for step in steps:
        image = apply_step(image, step)
    blue, green, red = image[..., 0], image[..., 1], image[..., 2]
    if np.array_equal(blue, green) and np.array_equal(green, red):
        # A gray result is stored as a one-channel PNG: a third of the size, same pixels.
        return encode(np.ascontiguousarray(blue), "png")
    return encode(image, "png")


# --- the provider ----------------------------------------------------------------------------


class LocalProvider:
    name = "local"
    caption_model = LOCAL_MODEL
    edit_model = LOCAL_MODEL
    capabilities = LOCAL_CAPABILITIES

    def __init__(
        self,
        *,
        face_cascade: Path | str | None = "auto",
        edit_max_side: int = 2048,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        """``face_cascade``: a cascade file, ``"auto"`` to search ``CASCADE_DIRS``, or None."""
        if face_cascade == "auto":
            self.face_cascade = find_face_cascade()
            if self.face_cascade is None:
                log.warning(
                    "ai.local.no_face_cascade",
                    looked_for=FACE_CASCADE_FILE,
                    dirs=[str(d) for d in CASCADE_DIRS],
                    hint="install Debian's opencv-data package",
                )
        else:
            self.face_cascade = Path(face_cascade) if face_cascade is not None else None
        self.edit_max_side = edit_max_side
        self.max_pixels = max_pixels

    @property
    def detects_faces(self) -> bool:
        return self.face_cascade is not None

    def check_edit(self, prompt: str, *, with_reference: bool) -> None:
        """Refuse, before any work, an edit this provider cannot make."""
        if with_reference:
            raise ProviderError(REFERENCE_REFUSAL, code=UNSUPPORTED_EDIT)
        parse_edit(prompt)

    async def caption(self, image: bytes) -> Caption:
        facts = await run_pixels(self._analyse, image)
        return Caption(text=describe(facts), model=LOCAL_MODEL)

    async def edit(self, image: bytes, prompt: str, reference: bytes | None = None) -> bytes:
        self.check_edit(prompt, with_reference=reference is not None)
        steps = parse_edit(prompt)
        return await run_pixels(edit_image, image, steps, self.edit_max_side, self.max_pixels)

    async def close(self) -> None:
        return None

    def _analyse(self, image: bytes) -> ImageFacts:
        cascade = None
        if self.face_cascade is not None:
            try:
                cascade = load_cascade(self.face_cascade)
            except (OSError, ValueError, ET.ParseError) as exc:
                log.error("ai.local.bad_face_cascade", path=str(self.face_cascade), error=str(exc))
        return analyse(image, cascade, self.max_pixels)
