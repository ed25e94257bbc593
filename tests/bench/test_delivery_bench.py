"""Delivery benchmark: a 400 px WebP from a 12 MP JPEG, first request (miss) and cached (hit).

Run with ``.venv/bin/pytest tests/bench/test_delivery_bench.py -q -s -p no:cacheprovider``.
The app runs in-process on the embedded stack (SQLite, in-process Redis, a local folder), and
each request goes through the whole ASGI app as a browser's would (signature check, storage,
lock, decode, transform, encode, store, record). Same-run reference, interleaved round by
round so contention hits both sides alike: pyvips ``thumbnail_buffer`` + ``webpsave_buffer``
on the same bytes (libvips with one thread, as our pixel work runs on one), run just before and
just after each miss; the goal is compared on the per-round ratio (miss over the mean of its two
references) so a burst of load on this shared machine hits both sides. Goals: miss within 1.5×
of the reference, hit under 5 % of the miss. Every miss is a new variant (the quality
changes by one per round), so nothing is served from the cache by accident.
"""

from __future__ import annotations

import asyncio
import io
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from backend.composition import AppResources
from backend.config import Settings
from backend.core.migrations import upgrade
from backend.main import create_app
from tests.conftest import IN_CI, PASSWORD, TEST_SECRET, client_for, unique_email
from tests.photos import photo_jpeg

os.environ.setdefault("VIPS_CONCURRENCY", "1")
ROUNDS = 15
HITS_PER_ROUND = 5


def _pyvips() -> Any | None:
    try:
        import pyvips  # type: ignore[import-not-found,unused-ignore]
    except (ImportError, OSError):
        return None
    return pyvips


def _spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) >= 4 else [min(values), 0, max(values)]
    return f"median {statistics.median(values):6.2f} ms (IQR {q[0]:.2f}–{q[2]:.2f})"


async def _timed(fn: Callable[[str], Awaitable[Any]], arg: str) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await fn(arg)
    return (time.perf_counter() - started) * 1000, result


def _encoders(data: bytes, vips: Any) -> list[str]:
    """Encoders alone on the same 400 px pixels: Pillow (what delivery uses) against libvips,
    alternated; reported, not asserted."""
    from backend.delivery.service import _decode
    from backend.delivery.transform import Spec, apply
    from backend.imaging.encode import AVIF_SPEED, encode

    pixels = apply(
        _decode(data, max_side=400, max_pixels=50_000_000),
        Spec(400, None, "inside", "center", 4096, 16_000_000),
    )
    rgb = pixels[:, :, ::-1].tobytes()
    image = vips.Image.new_from_memory(rgb, pixels.shape[1], pixels.shape[0], 3, "uchar")
    cases: dict[str, Callable[[], bytes]] = {
        "Pillow WebP q80": lambda: encode(pixels, "webp", 80),
        "libvips webpsave Q80": lambda: bytes(image.webpsave_buffer(Q=80)),
        f"Pillow AVIF q60 speed {AVIF_SPEED}": lambda: encode(pixels, "avif", 60),
        f"libvips heifsave av1 Q60 effort {9 - AVIF_SPEED}": lambda: bytes(
            image.heifsave_buffer(compression="av1", Q=60, effort=9 - AVIF_SPEED)
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    sizes: dict[str, int] = {}
    for _ in range(7):
        for name, fn in cases.items():
            started = time.perf_counter()
            sizes[name] = len(fn())
            times[name].append((time.perf_counter() - started) * 1000)
    return [
        f"  encode only, {name:<32} {_spread(values)}, {sizes[name]} bytes"
        for name, values in times.items()
    ]


async def test_delivery_miss_and_hit(tmp_path: Path) -> None:
    vips = _pyvips()
    if vips is None and IN_CI:
        pytest.fail("pyvips is the same-run reference of this benchmark; install it in CI")
    data = photo_jpeg(12.0)
    url = f"sqlite+aiosqlite:///{tmp_path / 'atelier.db'}"
    await asyncio.to_thread(upgrade, url)
    settings = Settings(
        env="test",
        secret_key=TEST_SECRET,
        database_url=url,
        redis_url=None,
        storage_url=f"file://{tmp_path / 'storage'}",
        public_base_url="https://testserver",
        log_level="WARNING",
    )
    resources = AppResources(settings)
    app = create_app(settings, resources=resources)
    try:
        async with client_for(app) as user, client_for(app) as browser:
            registered = await user.post(
                "/api/auth/register", json={"email": unique_email(), "password": PASSWORD}
            )
            assert registered.status_code == 201
            user.headers["X-CSRF-Token"] = user.cookies.get("csrf_token") or ""
            uploaded = await user.post(
                "/api/images", files={"file": ("photo.jpg", data, "image/jpeg")}
            )
            assert uploaded.status_code == 201, uploaded.text
            image_id = uploaded.json()["id"]

            async def mint(**body: Any) -> str:
                answer = await user.post("/api/delivery/url", json={"image_id": image_id, **body})
                assert answer.status_code == 201, answer.text
                path: str = answer.json()["url"].removeprefix("https://testserver")
                return path

            # Warm-up: imports, the first decoder and encoder calls, SQLite's first writes.
            warm = await browser.get(await mint(width=400, format="webp", quality=50))
            assert warm.status_code == 200
            if vips is not None:
                vips.Image.thumbnail_buffer(data, 400).webpsave_buffer(Q=50)

            misses: list[float] = []
            hits: list[float] = []
            reference: list[float] = []
            ratios: list[float] = []

            def pyvips_ms(quality: int) -> float:
                assert vips is not None
                started = time.perf_counter()
                vips.Image.thumbnail_buffer(data, 400).webpsave_buffer(Q=quality)
                return (time.perf_counter() - started) * 1000

            for i in range(ROUNDS):
                quality = 70 + i
                path = await mint(width=400, format="webp", quality=quality)
                before = pyvips_ms(quality) if vips is not None else 0.0
                ms, answer = await _timed(browser.get, path)
                assert answer.status_code == 200
                misses.append(ms)
                if vips is not None:
                    # The reference brackets the miss: both see the same moment's contention.
                    around = (before + pyvips_ms(quality)) / 2
                    reference.append(around)
                    ratios.append(ms / around)
                picture = Image.open(io.BytesIO(answer.content))
                assert (picture.format, picture.width) == ("WEBP", 400)
                for _ in range(HITS_PER_ROUND):
                    ms, again = await _timed(browser.get, path)
                    assert again.content == answer.content
                    hits.append(ms)

            other: dict[str, list[float]] = {}
            for fmt in ("jpeg", "avif"):
                for i in range(5):
                    path = await mint(width=400, format=fmt, quality=60 + i)
                    ms, answer = await _timed(browser.get, path)
                    assert answer.status_code == 200
                    other.setdefault(fmt, []).append(ms)
    finally:
        await resources.close()

    encoders = _encoders(data, vips) if vips is not None else []
    miss, hit = statistics.median(misses), statistics.median(hits)
    lines = [
        f"12 MP JPEG ({len(data) / 1e6:.1f} MB) → 400 px, {ROUNDS} rounds, in-process HTTP:",
        f"  delivery miss, WebP           {_spread(misses)}",
        f"  delivery hit, WebP            {_spread(hits)}  ({hit / miss:.1%} of the miss)",
        *(f"  delivery miss, {fmt:<14} {_spread(values)}" for fmt, values in other.items()),
    ]
    if vips is None:
        lines.append("  pyvips reference: SKIPPED (pip install pyvips pyvips-binary to compare)")
    else:
        q = statistics.quantiles(ratios, n=4)
        lines.append(f"  pyvips thumbnail + webpsave   {_spread(reference)}")
        lines.append(
            f"  miss / pyvips, per round      median {statistics.median(ratios):.2f}× "
            f"(IQR {q[0]:.2f}–{q[2]:.2f})"
        )
    lines += encoders
    print("\n" + "\n".join(lines))  # noqa: T201 - the benchmark's output is its point
    assert hit < 0.05 * miss, f"a hit took {hit:.2f} ms, {hit / miss:.1%} of a miss"
    if vips is None:
        return
    ratio = statistics.median(ratios)
    assert ratio <= 1.5, f"a miss takes {ratio:.2f}× pyvips' thumbnail + webpsave"
