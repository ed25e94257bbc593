"""`make stack` / `make stack-down`: the production shape on one machine, without Docker.

PostgreSQL, Redis and SeaweedFS (S3) from local binaries, two API instances (ports 8001 and
8002) and two `atelier worker` processes, all detached so they outlive this script. Everything
lives in ./var/stack; ./var/stack/pids lists what was started so `down` stops exactly that.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import (  # noqa: E402 - needs ROOT on sys.path first
    S3Server,
    Server,
    ServerUnavailable,
    start_postgres,
    start_redis,
    start_seaweedfs,
)

STACK = ROOT / "var" / "stack"
PIDS = STACK / "pids"
BIN = Path(sys.executable).parent
API_PORTS = (8001, 8002)
WORKERS = 2
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class Record:
    """What `down` needs for one process: how to recognise it, stop it, and clean after it."""

    def __init__(
        self, name: str, pid: int, sig: int, marker: str, cleanup: list[str] | None = None
    ) -> None:
        self.name, self.pid, self.sig, self.marker = name, pid, sig, marker
        self.cleanup = cleanup or []

    def to_json(self) -> dict[str, object]:
        return vars(self)


def _save(records: list[Record]) -> None:
    PIDS.write_text("".join(json.dumps(r.to_json()) + "\n" for r in records))


def _load() -> list[Record]:
    if not PIDS.exists():
        return []
    return [Record(**json.loads(line)) for line in PIDS.read_text().splitlines() if line]


def _alive(record: Record) -> bool:
    # The command line must still name the program: a recycled PID is left alone.
    try:
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return record.marker.encode() in cmdline


def _stop(record: Record) -> None:
    if _alive(record):
        # Each process leads its own session, so the group also holds its children
        # (PostgreSQL backends, weed's sub-servers).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, record.sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(record) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(record):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pid, signal.SIGKILL)
    for path in map(Path, record.cleanup):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _server_record(name: str, server: Server, marker: str) -> Record:
    # Each `up` starts from empty data directories, so `down` removes them rather than letting
    # ./var/stack collect one per run.
    cleanup = [str(server.workdir), *(str(p) for p in server.cleanup_paths)]
    return Record(name, server.pid, server.stop_signal, marker, cleanup)


def _spawn(name: str, argv: list[str], env: dict[str, str]) -> Record:
    log = (STACK / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    log.close()
    return Record(name, proc.pid, signal.SIGTERM, argv[1])


def _storage_url(s3: S3Server) -> str:
    query = urlencode(
        {
            "endpoint_url": s3.endpoint_url,
            "region": s3.region,
            "access_key": s3.access_key,
            "secret_key": s3.secret_key,
        }
    )
    return f"s3://{s3.bucket}?{query}"


def _wait_healthy(port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0)
            if response.status_code == 200 and response.json().get("status") == "ok":
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise RuntimeError(f"API on :{port} not healthy after {READY_TIMEOUT:.0f}s: {last}")


def up() -> int:
    if any(_alive(r) for r in _load()):
        print("the stack is already running; `make stack-down` first", file=sys.stderr)  # noqa: T201
        return 1
    STACK.mkdir(parents=True, exist_ok=True)
    records: list[Record] = []
    try:
        postgres = start_postgres(STACK)
        records.append(_server_record("postgres", postgres, "postgres"))
        _save(records)
        redis = start_redis(STACK)
        records.append(_server_record("redis", redis, "redis-server"))
        _save(records)
        s3 = start_seaweedfs(STACK)
        records.append(_server_record("seaweedfs", s3, "weed"))
        _save(records)

        origins = ",".join(f"http://127.0.0.1:{p},http://localhost:{p}" for p in API_PORTS)
        env = os.environ | {
            "ATELIER_ENV": "dev",
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "STORAGE_URL": _storage_url(s3),
            # Browser-facing links (and CORS) name the first instance.
            "ATELIER_PUBLIC_BASE_URL": f"http://127.0.0.1:{API_PORTS[0]}",
            "ATELIER_ALLOWED_ORIGINS": origins,
        }
        (STACK / "env").write_text(
            "".join(
                f"export {k}='{env[k]}'\n"
                for k in sorted(env)
                if k.startswith(("ATELIER_", "DATABASE_", "REDIS_", "STORAGE_"))
            )
        )
        subprocess.run([str(BIN / "atelier"), "migrate"], env=env, cwd=ROOT, check=True)

        for index, port in enumerate(API_PORTS, 1):
            argv = [str(BIN / "python"), str(BIN / "atelier"), "serve", "--port", str(port)]
            records.append(_spawn(f"api-{index}", argv, env))
            _save(records)
        for index in range(1, WORKERS + 1):
            argv = [str(BIN / "python"), str(BIN / "atelier"), "worker"]
            records.append(_spawn(f"worker-{index}", argv, env))
            _save(records)
        for port in API_PORTS:
            _wait_healthy(port)
    except (ServerUnavailable, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"make stack failed: {exc}\nlogs: {STACK}", file=sys.stderr)  # noqa: T201
        for record in reversed(records):
            _stop(record)
        PIDS.unlink(missing_ok=True)
        return 1

    print(  # noqa: T201
        "Atelier stack is up (production shape: Postgres, Redis, S3, 2 APIs, 2 workers)\n"
        + "".join(f"  API    http://127.0.0.1:{port}\n" for port in API_PORTS)
        + f"  Postgres {postgres.url}\n  Redis  {redis.url}\n  S3     {s3.endpoint_url}"
        f" (bucket {s3.bucket})\n  logs   {STACK}/*.log   env: source {STACK}/env\n"
        "Stop everything with `make stack-down`."
    )
    return 0


def down() -> int:
    records = _load()
    if not records:
        print("no stack recorded in var/stack/pids")  # noqa: T201
        return 0
    # Apps first, so they do not log connection errors while their servers go away.
    for record in reversed(records):
        print(f"stopping {record.name} (pid {record.pid})")  # noqa: T201
        _stop(record)
    PIDS.unlink(missing_ok=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args()
    return up() if args.action == "up" else down()


if __name__ == "__main__":
    sys.exit(main())
