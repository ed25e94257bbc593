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
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import PASSWORD
from tests.servers import free_port

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


# --- the same through the real server ---------------------------------------------------------

ATELIER = str(Path(sys.executable).with_name("atelier"))


def _kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak(pid: int) -> int:
    """Clear the process's peak RSS to its current RSS (kB), which is returned."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _kb(pid, "VmRSS")


def _png(seed: int) -> bytes:
    import cv2
    import numpy as np

    rgba = np.zeros((SIDE, SIDE, 4), np.uint8)
    rgba[100 + seed : 400, 100:1200] = (30, 200, 10 + seed, 255)
    return bytes(cv2.imencode(".png", rgba, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes())


class _Client:
    def __init__(self, base: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=base, timeout=120)
        email = f"bench-{os.getpid()}-{time.monotonic_ns()}@example.com"
        got = self.http.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        assert got.status_code == 201, got.text
        self.csrf = {"X-CSRF-Token": self.http.cookies.get("csrf_token") or ""}

    def upload(self, data: bytes) -> str:
        """Presign and send the form; returns the upload id, not yet confirmed."""
        signed = self.http.post(
            "/api/upload/presigned-url",
            json={"filename": "big.png", "content_type": "image/png", "size_bytes": len(data)},
            headers=self.csrf,
        ).json()
        posted = self.http.post(
            signed["url"], data=signed["fields"], files={"file": ("big.png", data, "image/png")}
        )
        assert posted.status_code in (201, 204), posted.text
        return str(signed["upload_id"])

    def confirm(self, upload_id: str) -> str:
        got = self.http.post(
            "/api/upload/confirm", json={"upload_id": upload_id}, headers=self.csrf
        )
        assert got.status_code == 201, got.text
        return str(got.json()["id"])

    def wait(self, path: str, busy: tuple[str, ...]) -> str:
        deadline = time.monotonic() + 300
        while True:
            status = str(self.http.get(path).json()["status"])
            if status not in busy or time.monotonic() > deadline:
                return status
            time.sleep(0.05)

    def sketch(self, image_id: str) -> str:
        got = self.http.post(
            "/api/sketch/create",
            json={"image_id": image_id, "style": "pencil", "method": "basic"},
            headers=self.csrf,
        )
        assert got.status_code == 202, got.text
        return str(got.json()["sketch"]["id"])


_BUSY_IMAGE = ("processing",)
_BUSY_SKETCH = ("queued", "running", "processing", "pending")


def test_peak_memory_through_the_embedded_server(tmp_path: Path, bench: Any) -> None:
    """`atelier serve` in embedded mode: the API and the worker are one process, so its peak
    RSS covers confirm (read back, validate, metadata) and the thumbnails and sketch tasks."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    for name in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL"):
        env.pop(name, None)
    env.update({"ATELIER_ENV": "dev", "PORT": str(port), "ATELIER_PUBLIC_BASE_URL": base})
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ATELIER, "serve", "--migrate"], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        c = _Client(base)
        files = [_png(seed) for seed in range(5)]
        # Warm-up with a small image: imports, codec tables and the first task's setup.
        small = c.confirm(c.upload(_png_small()))
        assert c.wait(f"/api/images/{small}", _BUSY_IMAGE) == "ready"
        assert c.wait(f"/api/sketch/{c.sketch(small)}", _BUSY_SKETCH) == "ready"

        start_kb = _reset_peak(proc.pid)
        upload_id = c.upload(files[0])
        before = _reset_peak(proc.pid)
        image = c.confirm(upload_id)
        assert c.wait(f"/api/images/{image}", _BUSY_IMAGE) == "ready"
        ready_mb = (_kb(proc.pid, "VmHWM") - before) / 1024
        before = _reset_peak(proc.pid)
        assert c.wait(f"/api/sketch/{c.sketch(image)}", _BUSY_SKETCH) == "ready"
        sketch_mb = (_kb(proc.pid, "VmHWM") - before) / 1024

        uploads = [c.upload(data) for data in files[1:]]
        _reset_peak(proc.pid)
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(c.confirm, uploads))
            sketches = list(pool.map(c.sketch, ids))
            done = list(pool.map(lambda s: c.wait(f"/api/sketch/{s}", _BUSY_SKETCH), sketches))
        assert done == ["ready"] * 4
        four_mb = _kb(proc.pid, "VmHWM") / 1024
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    bench.line(
        f"BENCH memory_server png={SIDE}x{SIDE} server_rss_mb={start_kb / 1024:.0f} "
        f"confirm_to_ready_mb=+{ready_mb:.0f} sketch_mb=+{sketch_mb:.0f} "
        f"four_at_once_process_peak_mb={four_mb:.0f}"
    )
    bench.row(
        f"`atelier serve` (embedded: API + worker in one process, idle {start_kb / 1024:.0f} MB), "
        f"{SIDE}×{SIDE} RGBA PNG: confirm → ready / then a sketch / four at once",
        f"+{ready_mb:.0f} MB / +{sketch_mb:.0f} MB / whole process {four_mb:.0f} MB "
        "(goals +250, +250, < 1024) |",
    )
    assert ready_mb <= 250
    assert sketch_mb <= 250
    assert four_mb < 1024


def _png_small() -> bytes:
    import cv2
    import numpy as np

    return bytes(cv2.imencode(".png", np.zeros((64, 64, 4), np.uint8))[1].tobytes())
