"""Decoder choice: time and peak RSS of each candidate on a real 12 MP photo and a 49 MP PNG.

Run with ``.venv/bin/pytest tests/bench/test_decode_bench.py -q -s -p no:cacheprovider``.
Every (candidate, file) pair runs in its own process: imports and a warm-up first, then the
peak RSS (``VmHWM`` after ``clear_refs``) of one run, then the median of several timed runs.
One thread per operation for OpenCV and libvips, as in production. These figures are why
``backend.imaging.decode`` uses OpenCV's reduced decode for JPEG pixels and libvips'
sequential streaming for PNG, GIF and WebP, and libvips (warnings as errors) for validation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.photos import photo_jpeg

REPO = Path(__file__).resolve().parents[2]
RUNS = 9
MODES = (
    "atelier",
    "opencv_reduced",
    "opencv",
    "pillow",
    "pyvips",
    "verify_atelier",
    "verify_pillow",
)

_CHILD = r"""
import io, json, statistics, sys, time
from pathlib import Path

import cv2
import numpy as np
import pyvips
from PIL import Image

import backend.core.pixels  # noqa: F401 - one OpenCV thread, as in production
from backend.imaging.decode import decode, probe, verify

pyvips.cache_set_max(0)
pyvips.concurrency_set(1)
mode, path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = Path(path).read_bytes()
SIDE = 800


def pil_flat(im):
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        flat = Image.new("RGB", im.size, (255, 255, 255))
        flat.paste(im, mask=im.getchannel("A"))
        return flat
    return im.convert("RGB")


def work(blob):
    if mode == "atelier":
        return decode(blob, max_side=SIDE, max_pixels=50_000_000).shape
    if mode == "opencv":
        full = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)
        h, w = full.shape[:2]
        scale = SIDE / max(h, w)
        size = (round(w * scale), round(h * scale))
        return cv2.resize(full, size, interpolation=cv2.INTER_AREA).shape
    if mode == "opencv_reduced":
        # libjpeg's DCT scaling (1/4 here); OpenCV cannot reduce a PNG on load.
        flags = cv2.IMREAD_REDUCED_COLOR_4 if blob[:2] == b"\xff\xd8" else cv2.IMREAD_UNCHANGED
        part = cv2.imdecode(np.frombuffer(blob, np.uint8), flags)
        h, w = part.shape[:2]
        scale = SIDE / max(h, w)
        size = (round(w * scale), round(h * scale))
        return cv2.resize(part, size, interpolation=cv2.INTER_AREA).shape
    if mode == "pillow":
        im = Image.open(io.BytesIO(blob))
        im.draft("RGB", (SIDE, SIDE))  # a no-op for PNG: Pillow cannot shrink it on load
        im.load()
        im.thumbnail((SIDE, SIDE), Image.Resampling.BOX)
        return np.asarray(pil_flat(im)).shape
    if mode == "pyvips":
        return pyvips.Image.thumbnail_buffer(blob, SIDE).numpy().shape
    if mode == "verify_atelier":
        verify(blob, probe(blob, max_pixels=50_000_000), max_pixels=50_000_000)
        return ()
    if mode == "verify_pillow":
        im = Image.open(io.BytesIO(blob))
        if im.format == "JPEG":
            im.draft(None, (1, 1))
        im.load()
        return im.size
    raise SystemExit(mode)


def kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])


warm = cv2.imencode(Path(path).suffix, np.zeros((64, 64, 3), np.uint8))[1].tobytes()
work(warm)
Path("/proc/self/clear_refs").write_text("5")
before = kb("VmRSS")
shape = work(data)
peak = (kb("VmHWM") - before) / 1024
times = []
for _ in range(runs):
    start = time.perf_counter()
    work(data)
    times.append((time.perf_counter() - start) * 1000)
print(json.dumps({"ms": statistics.median(times), "spread": max(times) - min(times),
                  "peak_mb": peak, "shape": list(shape)}))
"""


def measure(mode: str, path: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(path), str(RUNS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{mode} {path.name}:\n{result.stderr}"
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("decode-bench")
    jpeg = folder / "photo-12mp.jpg"
    jpeg.write_bytes(photo_jpeg(12.0))
    rgba = np.zeros((7000, 7000, 4), np.uint8)
    rgba[100:400, 100:1200] = (30, 200, 10, 255)
    png = folder / "zeros-49mp.png"
    png.write_bytes(cv2.imencode(".png", rgba, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes())
    return {"12 MP JPEG (real photo)": jpeg, "49 MP RGBA PNG": png}


def test_decoder_candidates(files: dict[str, Path], bench: Any) -> None:
    for label, path in files.items():
        cells = []
        for mode in MODES:
            got = measure(mode, path)
            bench.line(
                f"BENCH decode file={path.name} mode={mode} median_ms={got['ms']:.1f} "
                f"spread_ms={got['spread']:.1f} peak_mb=+{got['peak_mb']:.0f}"
            )
            cells.append(f"{mode} {got['ms']:.0f} ms / +{got['peak_mb']:.0f} MB")
            assert got["peak_mb"] >= 0
        bench.row(f"decode to 800 px, then whole-file check: {label}", "; ".join(cells))
