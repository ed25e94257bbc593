"""The decoder is pure, and it is the only one: no feature decodes pixels by itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

BACKEND = Path(__file__).resolve().parents[2] / "backend"
IMAGING = BACKEND / "imaging"
# Pixel decoders and the libraries that provide them.
_DECODE_CALL = re.compile(r"\b(imdecode|imread|Image\.open|new_from_buffer|\w+load_buffer)\(")
# Header-only reads outside imaging: metadata's lazy Pillow open for EXIF, no pixel decode.
_HEADER_ONLY = {BACKEND / "images" / "metadata.py"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_imaging_knows_no_http_database_storage_or_feature() -> None:
    for path in IMAGING.rglob("*.py"):
        outside = {
            name
            for name in _imports(path)
            if name.split(".")[0] in ("backend", "fastapi", "starlette", "sqlalchemy", "boto3")
            and not name.startswith("backend.imaging")
        }
        assert not outside, (path.name, outside)


def test_no_feature_decodes_pixels_by_itself() -> None:
    offenders = []
    for path in BACKEND.rglob("*.py"):
        if IMAGING in path.parents or path in _HEADER_ONLY:
            continue
        text = path.read_text()
        if _DECODE_CALL.search(text) or "pyvips" in _imports(path):
            offenders.append(str(path.relative_to(BACKEND)))
    assert offenders == []


def test_metadata_reads_headers_only() -> None:
    text = (BACKEND / "images" / "metadata.py").read_text()
    assert ".load()" not in text.replace("exif.load(", "")
    assert "imdecode" not in text
