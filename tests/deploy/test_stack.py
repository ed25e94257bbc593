"""`make stack` fails loudly when an API cannot start, even if something answers on its port.

The stack is the real script with its real servers (Postgres, Redis, SeaweedFS, `atelier`
processes) in a directory of the test's own; `down` always runs afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
STACK = [sys.executable, str(ROOT / "scripts" / "stack.py")]


class _LooksHealthy(BaseHTTPRequestHandler):
    """Another program on the port that answers every GET like a healthy Atelier would."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass


@pytest.fixture
def impostor() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LooksHealthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text()


def test_stack_up_fails_when_an_api_port_is_taken(impostor: int, tmp_path: Path) -> None:
    stack_dir = tmp_path / "stack"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update(
        {
            "ATELIER_STACK_DIR": str(stack_dir),
            "ATELIER_STACK_API_PORTS": f"{free_port()},{impostor}",
        }
    )
    started: list[int] = []
    try:
        up = subprocess.run(
            [*STACK, "up"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=240
        )
        # What was started, read from the log of the run (the pids file is gone on failure).
        started = [
            int(line.split("pid ", 1)[1].split(")", 1)[0])
            for line in up.stderr.splitlines()
            if line.startswith("stopping ")
        ]
    finally:
        down = subprocess.run(
            [*STACK, "down"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
    assert up.returncode != 0, up.stdout + up.stderr
    assert "stack is up" not in up.stdout.lower()
    assert "make stack failed: api-2 exited with code" in up.stderr, up.stderr
    assert f"port {impostor} is already taken by another process" in up.stderr
    assert "ATELIER_STACK_API_PORTS" in up.stderr
    assert down.returncode == 0
    # Nothing it started is left running: Postgres, Redis, SeaweedFS, APIs and workers.
    assert not (stack_dir / "pids").exists()
    assert started, up.stderr
    assert [pid for pid in started if _alive(pid)] == []
