"""Peak memory of the image path for a 49 MP RGBA PNG (7000×7000, mostly zeros, ~190 KB).

Run with ``.venv/bin/pytest tests/bench/test_memory_bench.py -q -s -p no:cacheprovider``.
Each figure comes from its own process (``VmHWM`` is per process; ``clear_refs`` resets it after
imports and a warm-up), running the exact functions the stack runs: confirm calls
``validation.inspect`` and ``metadata.extract``, the ``thumbnails`` task ``render_thumbnails``,
a sketch task ``sketch_bytes``. The reference in the same run is one full-size decode of the same
file by Pillow, what each of those steps did before the bounded decoder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SIDE = 7000

_CHILD = r"""
import io, json, sys, threading
from pathlib import Path

import cv2
import numpy as np

import backend.core.pixels  # noqa: F401 - production's OpenCV thread setting
from backend.images.metadata import extract
from backend.images.thumbnails import SIZES, render_thumbnails
from backend.images.validation import inspect
from backend.sketches.styles import SketchParams, sketch_bytes

MAX_PIXELS = 50_000_000
mode, side = sys.argv[1], int(sys.argv[2])


def kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])


def png(seed):
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[100 + seed : 400, 100:1200] = (30, 200, 10 + seed, 255)  # distinct bytes per copy
    return cv2.imencode(".png", rgba, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()


def confirm_to_ready(data):
    inspect(data, declared_type="image/png", max_bytes=10**8, max_pixels=MAX_PIXELS)
    extract(data)
    render_thumbnails(data, SIZES, max_pixels=MAX_PIXELS)


def sketch(data):
    sketch_bytes(data, "pencil", "basic", SketchParams())


files = [png(seed) for seed in range(4 if mode == "four" else 1)]
small = cv2.imencode(".png", np.zeros((64, 64, 4), np.uint8))[1].tobytes()
confirm_to_ready(small)
sketch(small)
if mode == "pillow":
    from PIL import Image
Path("/proc/self/clear_refs").write_text("5")
base = kb("VmRSS")
out = {"file_kb": len(files[0]) // 1024, "base_mb": base / 1024}
if mode == "pillow":
    with Image.open(io.BytesIO(files[0])) as im:
        im.load()
    out["decode_mb"] = (kb("VmHWM") - base) / 1024
elif mode == "one":
    confirm_to_ready(files[0])
    out["ready_mb"] = (kb("VmHWM") - base) / 1024
    Path("/proc/self/clear_refs").write_text("5")
    base2 = kb("VmRSS")
    sketch(files[0])
    out["sketch_mb"] = (kb("VmHWM") - base2) / 1024
else:
    def both(data):
        confirm_to_ready(data)
        sketch(data)
    threads = [threading.Thread(target=both, args=(d,)) for d in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["four_mb"] = (kb("VmHWM") - base) / 1024
    out["process_peak_mb"] = kb("VmHWM") / 1024
print(json.dumps(out))
"""


def run(mode: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(SIDE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{mode}:\n{result.stderr}"
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def test_peak_memory_of_a_49_megapixel_png(bench: Any) -> None:
    reference = run("pillow")
    one = run("one")
    four = run("four")
    bench.line(
        f"BENCH memory png={SIDE}x{SIDE} file_kb={one['file_kb']} base_mb={one['base_mb']:.0f} "
        f"confirm_to_ready_mb=+{one['ready_mb']:.0f} sketch_mb=+{one['sketch_mb']:.0f} "
        f"four_at_once_mb=+{four['four_mb']:.0f} process_peak_mb={four['process_peak_mb']:.0f} "
        f"pillow_full_decode_mb=+{reference['decode_mb']:.0f}"
    )
    bench.row(
        f"peak RSS, confirm → ready (validation + metadata + thumbnails), {SIDE}×{SIDE} RGBA "
        f"PNG ({one['file_kb']} KB)",
        f"+{one['ready_mb']:.0f} MB (goal ≤ +250) | one full-size Pillow decode of it: "
        f"+{reference['decode_mb']:.0f} MB",
    )
    bench.row(
        "same, then a pencil sketch of it",
        f"+{one['sketch_mb']:.0f} MB more (goal ≤ +250) |",
    )
    bench.row(
        "same, four images at once (4 threads: confirm, thumbnails and sketch each)",
        f"whole process {four['process_peak_mb']:.0f} MB (+{four['four_mb']:.0f} MB; goal "
        f"< 1024 MB) |",
    )
    assert one["ready_mb"] <= 250
    assert one["sketch_mb"] <= 250
    assert four["process_peak_mb"] < 1024
