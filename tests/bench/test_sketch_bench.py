"""Sketch benchmark: all 21 style × method combinations at 1 MP and 12 MP, against a dodge.

Run with ``.venv/bin/pytest tests/bench/test_sketch_bench.py -q -s -p no:cacheprovider``.

Input: the real photograph ``tests/data/coffee.jpg`` (600×400) upscaled with INTER_CUBIC to
1224×816 (1.0 MP) and 4240×2832 (12.0 MP), i.e. what ``load`` hands ``render`` for a phone
photo. Only ``render`` is timed (decode and encode are the same for every style). Reference:
a plain dodge sketch (gray, invert, 21×21 Gaussian blur, divide) on the same image, timed in
the same run, so each combination is reported as a ratio that does not depend on the machine.
Medians of several runs after a warm-up. The main pass runs OpenCV single-threaded, as
``backend.core.pixels`` configures production; a second pass at 12 MP uses OpenCV's default
thread count. Only correctness is asserted; the goals (12 MP: median ratio ≤ 3, max ≤ 8) are
reported, not asserted, since timings depend on the machine's load.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from backend.sketches.styles import METHODS, STYLES, load, render

Pixels = npt.NDArray[np.uint8]

PHOTO = Path(__file__).resolve().parents[1] / "data" / "coffee.jpg"
SIZES: dict[int, tuple[int, int]] = {1: (1224, 816), 12: (4240, 2832)}
RUNS: dict[int, int] = {1: 7, 12: 3}
DODGE_RUNS = 9
GOAL_MEDIAN, GOAL_MAX = 3.0, 8.0


def dodge(image: Pixels) -> Pixels:
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    blurred = cv2.GaussianBlur(cv2.bitwise_not(gray), (21, 21), 0)
    return np.asarray(cv2.divide(gray, cv2.bitwise_not(blurred), scale=256), np.uint8)


def median_ms(work: Callable[[], object], runs: int) -> float:
    work()  # warm-up: texture caches, thread pools, lazy allocations
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@pytest.fixture(scope="module")
def images() -> dict[int, Pixels]:
    source = load(PHOTO.read_bytes(), max_side=8192)
    return {
        mp: np.asarray(cv2.resize(source, size, interpolation=cv2.INTER_CUBIC), np.uint8)
        for mp, size in SIZES.items()
    }


@pytest.fixture
def threads() -> Iterator[None]:
    before = cv2.getNumThreads()
    yield
    cv2.setNumThreads(before)


@pytest.mark.usefixtures("threads")
def test_sketch_speed(
    images: dict[int, Pixels],
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
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

    def measure(mp: int, label: str) -> dict[tuple[str, str], tuple[float, float]]:
        image = images[mp]
        reference = median_ms(lambda: dodge(image), DODGE_RUNS)
        say(f"BENCH sketch mp={mp} threads={label} reference=dodge ms={reference:.1f}")
        results: dict[tuple[str, str], tuple[float, float]] = {}
        for style in STYLES:
            for method in METHODS:
                out = render(image, style, method)
                assert out.shape[:2] == image.shape[:2]
                assert out.ndim == (2 if STYLES[style].grayscale else 3)
                ms = median_ms(partial(render, image, style, method), RUNS[mp])
                ratio = ms / reference
                results[(style, method)] = (ms, ratio)
                say(
                    f"BENCH sketch mp={mp} threads={label} style={style} method={method} "
                    f"ms={ms:.1f} ratio={ratio:.2f}"
                )
        ratios = [ratio for _, ratio in results.values()]
        median, worst = statistics.median(ratios), max(ratios)
        verdict = (
            f"goals median<={GOAL_MEDIAN:g} {'met' if median <= GOAL_MEDIAN else 'MISSED'}, "
            f"max<={GOAL_MAX:g} {'met' if worst <= GOAL_MAX else 'MISSED'}"
        )
        say(
            f"BENCH sketch mp={mp} threads={label} median_ratio={median:.2f} "
            f"max_ratio={worst:.2f} dodge_ms={reference:.1f}"
            + (f" ({verdict})" if mp == 12 else "")
        )
        if table is not None:
            table.row(
                f"sketch render, 21 combinations, {mp} MP, OpenCV threads {label}",
                f"median {median:.2f}× / max {worst:.2f}× a dodge sketch ({reference:.0f} ms)",
            )
        return results

    say(f"BENCH sketch setup cv2={cv2.__version__} cpus={os.cpu_count()} photo={PHOTO.name}")
    cv2.setNumThreads(1)
    single = {mp: measure(mp, "1") for mp in SIZES}
    cv2.setNumThreads(-1)  # OpenCV's own default: one per core
    default = measure(12, str(cv2.getNumThreads()))

    say("")
    say("12 MP (4240×2832), ms and ratio to a dodge sketch on the same image, OpenCV threads 1:")
    say("")
    say("| style | " + " | ".join(METHODS) + " |")
    say("|---|" + "---|" * len(METHODS))
    for style in STYLES:
        cells = [
            f"{single[12][(style, m)][0]:.0f} ms ({single[12][(style, m)][1]:.1f}×)"
            for m in METHODS
        ]
        say(f"| {style} | " + " | ".join(cells) + " |")
    summary = []
    for label, runs in (("1 MP, threads 1", single[1]), ("12 MP, threads 1", single[12])):
        ratios = [ratio for _, ratio in runs.values()]
        summary.append(f"{label}: median {statistics.median(ratios):.2f}×, max {max(ratios):.2f}×")
    ratios = [ratio for _, ratio in default.values()]
    summary.append(
        f"12 MP, default threads: median {statistics.median(ratios):.2f}×, max {max(ratios):.2f}×"
    )
    say("")
    say("; ".join(summary))
