"""Python 3.11 to 3.13 are supported, Debian 12's 3.11.2 included, by every install path."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]


def _pins() -> dict[str, Requirement]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            pins[requirement.name.lower()] = requirement
    return pins


def test_pyproject_accepts_311_to_313() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    allowed = SpecifierSet(project["requires-python"])
    for version in ("3.11.2", "3.11.7", "3.12.1", "3.13.0"):
        assert version in allowed, version
    for version in ("3.10.13", "3.14.0"):
        assert version not in allowed, version


def _makefile_check() -> str:
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"\$\(PYTHON\) -c '([^']+)'", makefile)
    assert match, "the Makefile's interpreter check"
    return match.group(1)


@pytest.mark.parametrize(
    ("version", "accepted"),
    [
        ((3, 11, 2), True),
        ((3, 12, 1), True),
        ((3, 13, 0), True),
        ((3, 10, 13), False),
        ((3, 14, 0), False),
    ],
)
def test_makefile_interpreter_check(version: tuple[int, int, int], accepted: bool) -> None:
    # The Makefile's own one-liner, run with the interpreter's version replaced.
    shim = (
        "import sys\n"
        f"sys.version_info = {version!r}\n"
        f"sys.version = {'.'.join(map(str, version))!r} + ' (simulated)'\n"
        f"exec({_makefile_check()!r})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", shim], capture_output=True, text=True, timeout=30, check=False
    )
    assert (result.returncode == 0) is accepted, result.stderr
    if not accepted:
        assert "Atelier needs Python 3.11 to 3.13" in result.stderr


def test_redis_gets_async_timeout_below_3_11_3() -> None:
    # redis declares the dependency with a marker; the pin must cover exactly that case.
    wanted = next(
        Requirement(spec) for spec in requires("redis") or [] if spec.startswith("async-timeout")
    )
    pin = _pins()["async-timeout"]
    assert pin.marker is not None
    pinned_version = next(iter(pin.specifier)).version
    assert pinned_version in wanted.specifier
    for full_version, needed in (("3.11.2", True), ("3.11.3", False), ("3.12.1", False)):
        env = {"python_full_version": full_version, "python_version": full_version[:4]}
        assert pin.marker.evaluate(env) is needed
        assert Marker(str(wanted.marker)).evaluate(env) is needed


def test_every_runtime_pin_is_exact() -> None:
    for name, requirement in _pins().items():
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", name
