"""The README's quick tour, run as written against a live embedded `atelier serve`.

The commands are not copied here: the fenced ```bash tour blocks under "## Quick tour" are
extracted from README.md and run in order in one bash process, so a changed command in the
README is what runs. A block marked `requires=/path` runs only when the server's OpenAPI schema
has that path (a feature still landing); the check is on the served schema, nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.deploy.processes import atelier_env, serving
from tests.servers import free_port

pytestmark = pytest.mark.embedded
ROOT = Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"^```bash tour(?P<info>[^\n]*)\n(?P<body>.*?)^```$", re.S | re.M)
_STEP_MARK = "::tour step {n} done::"


@dataclass(frozen=True)
class Block:
    number: int
    requires: str | None
    body: str


def tour_blocks(readme: str) -> list[Block]:
    """The ```bash tour blocks of the "Quick tour" section, in order."""
    start = readme.index("\n## Quick tour\n")
    end = readme.find("\n## ", start + 1)
    section = readme[start : end if end != -1 else len(readme)]
    blocks = []
    for n, match in enumerate(_FENCE.finditer(section), start=1):
        info = dict(word.split("=", 1) for word in match["info"].split() if "=" in word)
        blocks.append(Block(n, info.get("requires"), match["body"]))
    return blocks


def test_tour_blocks_are_found() -> None:
    blocks = tour_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 9
    text = "\n".join(b.body for b in blocks)
    for needle in (
        "-c jar -b jar",
        "X-CSRF-Token",
        "X-API-Key",
        "/api/upload/presigned-url",
        "/api/upload/confirm",
        "/api/images",
        "/ws",
        "/api/ai/edit",
        "/api/batches",
        "X-Atelier-Signature",
        "/api/delivery/url",
    ):
        assert needle in text, needle
    # Only the delivery step waits for its feature, and only on the served schema.
    assert [b.requires for b in blocks if b.requires] == ["/api/delivery/url"]
    assert "/api/delivery/url" in blocks[-1].body


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    # The batch step fetches photos from a receiver on this machine, as the README says to.
    env = atelier_env(ATELIER_ENV="dev", ATELIER_FETCH_ALLOW_LOOPBACK_HOSTS="127.0.0.1")
    with serving("serve", "--migrate", env=env, cwd=tmp_path) as served:
        yield served.base


def run_tour(blocks: list[Block], base: str, tmp_path: Path) -> dict[int, str]:
    """Run the blocks in one bash; return each step's output."""
    # A failed step must not leave the README's background helpers holding the output pipes.
    script = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for block in blocks:
        script += [block.body, f"echo '{_STEP_MARK.format(n=block.number)}'"]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {
        **os.environ,
        "BASE": base,
        "HOOK_PORT": str(free_port()),
        "TMPDIR": str(scratch),
        # python3 with websockets, whichever virtualenv runs the tests.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.Popen(
        ["bash", "-c", "\n".join(script)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"the tour hung:\n{out[-3000:]}\n{err[-3000:]}")
    finally:
        # Background helpers of a failed step (the watcher, the receiver) go with the group.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, (
        f"tour failed (exit {proc.returncode}):\n{out[-4000:]}\n{err[-4000:]}"
    )
    steps: dict[int, str] = {}
    rest = out
    for block in blocks:
        mark = _STEP_MARK.format(n=block.number)
        assert mark in rest, f"step {block.number} did not finish:\n{out}"
        steps[block.number], rest = rest.split(mark + "\n", 1)
    return steps


def test_readme_tour_runs(server: str, tmp_path: Path) -> None:
    assert shutil.which("curl"), "the README tour needs curl (apt-get install curl)"
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    blocks = [
        b
        for b in tour_blocks((ROOT / "README.md").read_text())
        if b.requires is None or b.requires in paths
    ]
    by_need = {b.requires for b in blocks}
    steps = run_tour(blocks, server, tmp_path)

    assert '"email":"tour-' in steps[1]
    assert "auth.csrf" in steps[1]
    assert "-> 403" in steps[1]
    assert steps[1].rstrip().endswith("-> 201"), steps[1]
    assert '"email":"tour-' in steps[2]
    assert steps[3].strip() in {"processing", "ready"}
    assert steps[4].splitlines()[-1] == "upload.unsupported_type"
    assert "200 image/jpeg" in steps[5]
    progress = steps[6].splitlines()
    assert progress[0] == "connected"
    assert progress[-2].startswith("succeeded 100"), progress
    # Live progress: the socket saw the task running with values between 0 and 100.
    running = [int(line.split()[1]) for line in progress if line.startswith("running")]
    assert running, progress
    assert running == sorted(running), progress
    assert 0 < max(running) < 100, progress
    assert progress[-1].startswith("200 image/png")
    caption_lines = steps[7].splitlines()
    assert caption_lines[0] == "succeeded", caption_lines
    assert caption_lines[1].strip(), caption_lines
    assert caption_lines[2] == "ai.unsupported_edit"
    assert caption_lines[3] == "succeeded"
    assert re.fullmatch(r"[0-9a-f-]{36}", caption_lines[4])
    assert "succeeded" in steps[8].splitlines()[0]
    assert "Output Image Urls" in steps[8]
    assert "webhook verified" in steps[8]
    assert "REJECTED" not in steps[8]
    if "/api/delivery/url" in by_need:
        assert steps[9].strip().startswith("200 image/webp"), steps[9]
