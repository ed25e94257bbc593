"""Imports run one way: app (main, cli, composition, lambda handler) → features → core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BACKEND = Path(__file__).resolve().parents[1] / "backend"
APP_MODULES = {"backend.main", "backend.cli", "backend.composition", "backend.lambda_handler"}
# What core may use besides itself: settings, the storage protocol (shared infrastructure like
# the database and Redis clients), and the request metric objects the middleware records into.
CORE_MAY_IMPORT = {"backend.config", "backend.storage.base", "backend.ops.metrics"}


def _imports(path: Path) -> set[str]:
    """Every backend module a file imports, at the top, in functions or for type checking."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "backend"}


def _module(path: Path) -> str:
    return ".".join(path.relative_to(BACKEND.parent).with_suffix("").parts)


def test_core_imports_no_feature() -> None:
    upward = {
        _module(path): sorted(
            name
            for name in _imports(path)
            if not name.startswith("backend.core") and name not in CORE_MAY_IMPORT
        )
        for path in (BACKEND / "core").rglob("*.py")
    }
    assert not {m: names for m, names in upward.items() if names}


def test_features_never_import_the_app() -> None:
    upward = {
        _module(path): sorted(_imports(path) & APP_MODULES)
        for path in BACKEND.rglob("*.py")
        if _module(path) not in APP_MODULES
    }
    assert not {m: names for m, names in upward.items() if names}


def test_each_feature_module_imports_alone() -> None:
    """No import circle: every feature's dependency accessors load in a fresh interpreter."""
    for module in ("backend.tasks.deps", "backend.tasks.queue", "backend.core.resources"):
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True, cwd=BACKEND.parent)
