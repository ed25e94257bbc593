"""The Lambda image's entry point, run for real: the runtime interface client the image starts
(`python -m awslambdaric backend.lambda_handler.handler`, Dockerfile.lambda's ENTRYPOINT and
CMD) against a local server speaking the Lambda Runtime API, the way Lambda drives the image.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from backend.core.migrations import upgrade
from tests.deploy.test_dockerfile import LAMBDA_DOCKERFILE, _stages
from tests.deploy.test_lambda import SECRET, http_api_stage_event, rest_api_event

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = "/2018-06-01/runtime"


class FakeRuntimeApi(ThreadingHTTPServer):
    """Hands out queued events on ``invocation/next`` and records what comes back."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RuntimeHandler)
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.results: queue.Queue[tuple[str, str, Any]] = queue.Queue()


class _RuntimeHandler(BaseHTTPRequestHandler):
    server: FakeRuntimeApi

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        assert self.path == f"{RUNTIME}/invocation/next", self.path
        request_id, event = self.server.events.get()  # blocks like the real API between calls
        body = json.dumps(event).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
        self.send_header("Lambda-Runtime-Deadline-Ms", "9999999999999")
        self.send_header(
            "Lambda-Runtime-Invoked-Function-Arn",
            "arn:aws:lambda:eu-west-1:123456789012:function:atelier-api",
        )
        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = self.path.removeprefix(RUNTIME + "/").split("/")
        kind = parts[-1]  # "response", "error", or init/error
        request_id = parts[1] if parts[0] == "invocation" else "init"
        self.server.results.put((request_id, kind, json.loads(raw) if raw else None))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass


@pytest.fixture
def runtime_api() -> Iterator[FakeRuntimeApi]:
    server = FakeRuntimeApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_image_entry_point_answers_api_gateway_events(
    runtime_api: FakeRuntimeApi, tmp_path: Path
) -> None:
    (runtime,) = _stages(LAMBDA_DOCKERFILE)[-1:]
    entrypoint = json.loads(next(a for n, a in runtime if n == "ENTRYPOINT"))
    (cmd,) = [json.loads(a) for n, a in runtime if n == "CMD"]
    # The image's own command, with this venv's interpreter in place of /opt/venv's.
    argv = [sys.executable, *entrypoint[1:], *cmd]

    database_url = f"sqlite+aiosqlite:///{tmp_path / 'atelier.db'}"
    upgrade(database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    for name in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL"):
        env.pop(name, None)
    env |= {
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{runtime_api.server_address[1]}",
        "ATELIER_ENV": "test",
        "ATELIER_SECRET_KEY": SECRET,
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{tmp_path / 'storage'}",
        "PYTHONPATH": str(ROOT),
    }
    runtime_api.events.put(("req-1", http_api_stage_event("prod", "GET", "/healthz")))
    runtime_api.events.put(("req-2", rest_api_event("GET", "/ws")))
    log = tmp_path / "ric.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=out)
    try:
        answers = {}
        for _ in range(2):
            try:
                request_id, kind, payload = runtime_api.results.get(timeout=60)
            except queue.Empty:
                pytest.fail(f"no answer from the runtime client:\n{log.read_text()[-3000:]}")
            assert kind == "response", (request_id, kind, payload, log.read_text()[-3000:])
            answers[request_id] = payload
    finally:
        proc.kill()
        proc.wait(10)
    assert answers["req-1"]["statusCode"] == 200
    assert json.loads(answers["req-1"]["body"]) == {"status": "ok"}
    assert answers["req-2"]["statusCode"] == 501
    assert json.loads(answers["req-2"]["body"])["code"] == "realtime.unsupported_on_lambda"
