"""Thumbnail benchmark: ``render_thumbnails`` (both sizes) on 1, 12 and 24 MP JPEGs.

Run with ``.venv/bin/pytest tests/bench/test_thumbnails_bench.py -q -s -p no:cacheprovider``.
Each measurement runs in its own process so its peak RSS is its own: the process loads the
libraries, warms them up on a small image, resets its peak RSS (``VmHWM``), renders once and
reads the peak again (peak RSS delta), then times several more runs (median). References,
measured the same way: a plain full-size ``cv2.imdecode`` + INTER_AREA resizes + encodes (the
naive version of the same work), and pyvips' ``thumbnail_buffer`` when pyvips is importable.
Only correctness is asserted; timings are reported, never asserted, since they depend on the
machine. OpenCV runs single-threaded, as ``backend.core.pixels`` configures it in production.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import pytest

from tests.images.samples import encode_jpeg_cv2, photo_like

REPO = Path(__file__).resolve().parents[2]
MEGAPIXELS: dict[int, tuple[int, int]] = {1: (1152, 864), 12: (4000, 3000), 24: (6000, 4000)}
RUNS: dict[int, int] = {1: 15, 12: 7, 24: 5}

_CHILD = r"""
import json, statistics, sys, time
from pathlib import Path

import cv2
import numpy as np

mode, path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = Path(path).read_bytes()
# As in production (backend.core.pixels): one OpenCV thread per operation, one operation per core.
cv2.setNumThreads(1)

if mode == "atelier":
    from backend.images.thumbnails import render_thumbnails

    def work(blob):
        out = render_thumbnails(blob)
        return [out["medium"], out["small"]]

elif mode == "reference":
    def work(blob):
        # The naive version: decode every pixel at full size, then shrink.
        full = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
        h, w = full.shape[:2]
        results = []
        current = full
        for side in (800, 200):
            scale = side / max(w, h)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            current = cv2.resize(current, size, interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", current, [cv2.IMWRITE_JPEG_QUALITY, 85])
            results.append(buf.tobytes())
        return results

else:
    import pyvips

    def save(image):
        try:
            return image.jpegsave_buffer(Q=85, keep=0)
        except pyvips.Error:
            return image.jpegsave_buffer(Q=85, strip=True)

    def work(blob):
        # thumbnail_buffer streams; copy_memory decodes once so both sizes can be made from it.
        medium = pyvips.Image.thumbnail_buffer(blob, 800).copy_memory()
        small = medium.thumbnail_image(200)
        return [save(medium), save(small)]

def status_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


# Warm-up on a small image: thread pools, codec tables and lazy imports are not the image's cost.
ok, small = cv2.imencode(".jpg", np.full((600, 900, 3), 128, np.uint8))
work(small.tobytes())

# ru_maxrss survives exec on Linux, so it would report the parent pytest's peak; VmHWM is this
# process's own and writing 5 to clear_refs resets it to the current RSS.
Path("/proc/self/clear_refs").write_text("5")
before = status_kb("VmRSS")
outputs = work(data)
peak_kb = status_kb("VmHWM") - before

times = []
for _ in range(runs):
    start = time.perf_counter()
    work(data)
    times.append((time.perf_counter() - start) * 1000)

sizes = []
for blob in outputs:
    decoded = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    sizes.append([int(decoded.shape[1]), int(decoded.shape[0])])
print(json.dumps({
    "ms": statistics.median(times),
    "min_ms": min(times),
    "peak_rss_mb": peak_kb / 1024,
    "sizes": sizes,
}))
"""


@dataclass(frozen=True)
class Measurement:
    ms: float
    min_ms: float
    peak_rss_mb: float
    sizes: list[list[int]]


def pyvips_available() -> bool:
    try:
        import pyvips  # noqa: F401
    except (ImportError, OSError):
        # OSError: the Python binding is there but libvips itself is not.
        return False
    return True


def measure(mode: str, path: Path, runs: int) -> Measurement:
    env = {
        **os.environ,
        "VIPS_CONCURRENCY": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(path), str(runs)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{mode} failed:\n{result.stderr}"
    return Measurement(**json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("thumbnail-bench")
    paths: dict[int, Path] = {}
    for mp, (width, height) in MEGAPIXELS.items():
        path = folder / f"photo-{mp}mp.jpg"
        path.write_bytes(encode_jpeg_cv2(photo_like(width, height, seed=mp), quality=90))
        paths[mp] = path
    return paths


def test_thumbnail_speed_and_memory(
    photos: dict[int, Path], request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    vips = pyvips_available()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    try:
        # The shared bench conftest collects rows for the README's performance table.
        table: Any = request.getfixturevalue("bench")
    except pytest.FixtureLookupError:
        table = None

    def say(text: str) -> None:
        with capsys.disabled():
            if reporter is not None:
                reporter.ensure_newline()
                reporter.write_line(text)
            else:
                print(text)  # noqa: T201 - the benchmark's output is its point

    say(
        f"BENCH thumbnails setup cv2={cv2.__version__} cv2_threads=1 vips_concurrency=1 "
        f"cpus={os.cpu_count()} pyvips={'yes' if vips else 'no (reference is cv2 full decode)'}"
    )
    rows: list[str] = []
    for mp, path in photos.items():
        width, height = MEGAPIXELS[mp]
        ours = measure("atelier", path, RUNS[mp])
        reference = measure("reference", path, RUNS[mp])
        expected_medium = [800, round(800 * height / width)]
        assert ours.sizes[0] == expected_medium
        assert ours.sizes[1] == [200, round(200 * height / width)]
        assert reference.sizes[0] == expected_medium

        line = (
            f"BENCH thumbnails mp={mp} file_mb={path.stat().st_size / 1e6:.1f} "
            f"ms={ours.ms:.1f} peak_rss_mb={ours.peak_rss_mb:.1f} "
            f"ref={reference.ms:.1f} ref_peak_rss_mb={reference.peak_rss_mb:.1f} "
            f"ratio={ours.ms / reference.ms:.2f}"
        )
        vips_cells = "n/a | n/a"
        if vips:
            other = measure("pyvips", path, RUNS[mp])
            line += (
                f" vips={other.ms:.1f} vips_peak_rss_mb={other.peak_rss_mb:.1f}"
                f" vips_ratio={ours.ms / other.ms:.2f}"
            )
            vips_cells = (
                f"{other.ms:.1f} ms / {other.peak_rss_mb:.0f} MB | {ours.ms / other.ms:.2f}"
            )
        say(line)
        if table is not None:
            table.row(
                f"thumbnails, both sizes, {mp} MP JPEG",
                f"{ours.ms:.0f} ms, peak RSS +{ours.peak_rss_mb:.0f} MB "
                f"(full-size cv2 decode: {reference.ms:.0f} ms, +{reference.peak_rss_mb:.0f} MB)",
            )
        rows.append(
            f"| {mp} MP ({width}×{height}) | {ours.ms:.1f} ms | {ours.peak_rss_mb:.0f} MB "
            f"| {reference.ms:.1f} ms / {reference.peak_rss_mb:.0f} MB "
            f"| {ours.ms / reference.ms:.2f} | {vips_cells} |"
        )

    say("")
    say(
        "| image | render_thumbnails | peak RSS Δ | cv2 full decode (ms / RSS) | ratio "
        "| pyvips thumbnail (ms / RSS) | ratio vs pyvips |"
    )
    say("|---|---|---|---|---|---|---|")
    for row in rows:
        say(row)
