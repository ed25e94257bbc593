"""`make stack` / `make stack-down`: the production shape on one machine, without Docker.

PostgreSQL, Redis and SeaweedFS (S3) from local binaries, two API instances (ports 8001 and
8002, or ATELIER_STACK_API_PORTS) and two `atelier worker` processes, all detached so they
outlive this script. Everything lives in ./var/stack (or ATELIER_STACK_DIR); its `pids` file
lists what was started so `down` stops exactly that.

`up` reports ready only when every process it started is alive, each API process itself listens
on its port and answers /healthz and /health there, and each worker has started; otherwise it
stops everything, says which process failed and why, and exits non-zero.
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

STACK = Path(os.environ.get("ATELIER_STACK_DIR") or ROOT / "var" / "stack").resolve()
PIDS = STACK / "pids"
BIN = Path(sys.executable).parent
API_PORTS = tuple(
    int(port) for port in os.environ.get("ATELIER_STACK_API_PORTS", "8001,8002").split(",")
)
WORKERS = 2
LOG_TAIL_LINES = 15
Proc = subprocess.Popen[bytes]
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class StackError(RuntimeError):
    """A process of the stack did not come up; the message says which and why."""


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


def _spawn(name: str, argv: list[str], env: dict[str, str]) -> tuple[Record, Proc]:
    log = (STACK / f"{name}.log").open("ab")
    proc: Proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    log.close()
    return Record(name, proc.pid, signal.SIGTERM, argv[1]), proc


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


def _log_tail(name: str) -> str:
    try:
        lines = (STACK / f"{name}.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(f"    {line[:300]}" for line in lines[-LOG_TAIL_LINES:])


def _listening_sockets(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on ``port`` (IPv4 and IPv6), from /proc/net."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN.
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _listens_on(pid: int, port: int) -> bool:
    """Whether this very process holds the listening socket (not some other one on the port)."""
    wanted = {f"socket:[{inode}]" for inode in _listening_sockets(port)}
    if not wanted:
        return False
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in descriptors:
        with contextlib.suppress(OSError):
            if os.readlink(fd) in wanted:
                return True
    return False


def _exited(name: str, proc: Proc, what: str) -> StackError:
    tail = _log_tail(name)
    hint = ""
    if "address already in use" in tail.lower():
        hint = (
            f"\n  {what} is already taken by another process: free it, or pick other ports with"
            " ATELIER_STACK_API_PORTS=PORT1,PORT2"
        )
    return StackError(
        f"{name} exited with code {proc.returncode} before it was ready{hint}\n"
        f"  last lines of {STACK / (name + '.log')}:\n{tail}"
    )


def _wait_api(name: str, proc: Proc, port: int, deadline: float) -> None:
    last = "it does not listen on the port yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _exited(name, proc, f"port {port}")
        # An answer on the port proves nothing by itself: another server may hold it.
        if _listens_on(proc.pid, port):
            try:
                alive = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0)
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5.0)
                if alive.status_code == 200 and health.status_code == 200:
                    return
                last = f"/health answered {health.status_code}: {health.text[:300]}"
            except httpx.HTTPError as exc:
                last = str(exc)
        time.sleep(0.3)
    raise StackError(f"{name} (port {port}) not ready after {READY_TIMEOUT:.0f} s: {last}")


def _wait_worker(name: str, proc: Proc, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _exited(name, proc, "a port")
        if "worker_starting" in _log_tail(name):
            return
        time.sleep(0.2)
    raise StackError(f"{name} did not start within {READY_TIMEOUT:.0f} s:\n{_log_tail(name)}")


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

        apis: list[tuple[str, Proc, int]] = []
        workers: list[tuple[str, Proc]] = []
        for index, port in enumerate(API_PORTS, 1):
            argv = [str(BIN / "python"), str(BIN / "atelier"), "serve", "--port", str(port)]
            record, proc = _spawn(f"api-{index}", argv, env)
            records.append(record)
            apis.append((record.name, proc, port))
            _save(records)
        for index in range(1, WORKERS + 1):
            argv = [str(BIN / "python"), str(BIN / "atelier"), "worker"]
            record, proc = _spawn(f"worker-{index}", argv, env)
            records.append(record)
            workers.append((record.name, proc))
            _save(records)
        deadline = time.monotonic() + READY_TIMEOUT
        for name, proc, port in apis:
            _wait_api(name, proc, port, deadline)
        for name, proc in workers:
            _wait_worker(name, proc, deadline)
        # A process that passed its check may have died while the others were checked.
        for name, proc in [*((n, p) for n, p, _ in apis), *workers]:
            if proc.poll() is not None:
                raise _exited(name, proc, "its port")
    except (ServerUnavailable, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"make stack failed: {exc}\nlogs: {STACK}", file=sys.stderr)  # noqa: T201
        for record in reversed(records):
            print(f"stopping {record.name} (pid {record.pid})", file=sys.stderr)  # noqa: T201
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
        print(f"no stack recorded in {PIDS}")  # noqa: T201
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
