"""``atelier sketch`` and ``atelier gallery`` as a person runs them: a real process, real files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from backend.sketches.styles import METHODS, STYLES

REPO = Path(__file__).resolve().parents[2]
PHOTO = REPO / "tests" / "data" / "coffee.jpg"  # 600×400


def atelier(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    target = tmp_path / "espresso.jpg"
    shutil.copyfile(PHOTO, target)
    return target


def test_sketch_default_output_next_to_the_input(photo: Path) -> None:
    result = atelier("sketch", photo, "-s", "charcoal", "-m", "advanced")
    assert result.returncode == 0, result.stderr
    out = photo.with_name("espresso_charcoal_advanced.png")
    assert str(out) in result.stdout
    with Image.open(out) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "L", (600, 400))


def test_sketch_format_from_extension_and_options(photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.webp"
    result = atelier(
        "sketch", photo, "--style", "acrylic", "-o", out, "--intensity", "0.9", "--max-side", "300"
    )
    assert result.returncode == 0, result.stderr
    with Image.open(out) as im:
        assert (im.format, im.mode, im.size) == ("WEBP", "RGB", (300, 200))


def test_sketch_defaults_to_pencil_basic(photo: Path) -> None:
    result = atelier("sketch", photo)
    assert result.returncode == 0, result.stderr
    assert photo.with_name("espresso_pencil_basic.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sketch", "{missing}"], "no such file"),
        (["sketch", "{photo}", "-s", "crayon"], "unknown style 'crayon'"),
        (["sketch", "{photo}", "-m", "quick"], "unknown method 'quick'"),
        (["sketch", "{photo}", "--intensity", "2"], "intensity"),
        (["sketch", "{photo}", "--max-side", "10"], "max_side"),
        (["sketch", "{photo}", "-o", "{bitmap}"], ".png, .jpg"),
        (["sketch", "{notes}"], "not a JPEG, PNG, WebP or GIF"),
        (["gallery", "{photo}", "-o", "{sheet}", "--cell", "8"], "cell"),
        (["gallery", "{missing}", "-o", "{sheet}"], "no such file"),
        (["gallery", "{photo}", "-o", "{bitmap}"], ".png, .jpg"),
        (["gallery", "{photo}", "-o", "{photo}.jpg", "--colors", "64"], "--colors"),
    ],
)
def test_errors_exit_2_with_a_message_and_no_traceback(
    args: list[str], message: str, photo: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    paths = {"photo": photo, "notes": notes, "missing": tmp_path / "missing.jpg"}
    filled = [
        a.format(sheet=tmp_path / "sheet.png", bitmap=tmp_path / "x.bmp", **paths) for a in args
    ]
    result = atelier(*filled)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_gallery_writes_a_labelled_sheet(photo: Path, tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.png"
    result = atelier("gallery", photo, "-o", sheet, "--cell", "96")
    assert result.returncode == 0, result.stderr
    rows, cols, gap = 1 + len(STYLES), 1 + len(METHODS), 4
    with Image.open(sheet) as im:
        assert im.format == "PNG"
        assert im.size == (cols * 96 + (cols + 1) * gap, rows * 96 + (rows + 1) * gap)


def test_gallery_indexed_png_is_smaller(photo: Path, tmp_path: Path) -> None:
    full, indexed = tmp_path / "full.png", tmp_path / "indexed.png"
    assert atelier("gallery", photo, "-o", full, "--cell", "128").returncode == 0
    result = atelier("gallery", photo, "-o", indexed, "--cell", "128", "--colors", "128")
    assert result.returncode == 0, result.stderr
    with Image.open(indexed) as im:
        assert im.mode == "P"
    assert indexed.stat().st_size < full.stat().st_size
