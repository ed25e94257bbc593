"""Run the `atelier` command as the image and `make run` do: a real process, a clean env."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.servers import S3Server, free_port

ATELIER = str(Path(sys.executable).with_name("atelier"))
PLATFORM_NAMES = ("DATABASE_URL", "REDIS_URL", "STORAGE_URL", "PORT", "GEMINI_API_KEY")


def atelier_env(**values: str) -> dict[str, str]:
    """The caller's environment without any Atelier or platform setting, plus ``values``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ATELIER_") and k not in PLATFORM_NAMES
    }
    env.update(values)
    return env


def s3_url(server: S3Server) -> str:
    query = urlencode(
        {
            "endpoint_url": server.endpoint_url,
            "region": server.region,
            "access_key": server.access_key,
            "secret_key": server.secret_key,
        }
    )
    return f"s3://{server.bucket}?{query}"


def run_atelier(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ATELIER, *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Served:
    base: str
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()


@contextmanager
def serving(
    *args: str, env: dict[str, str], cwd: Path, port: int | None = None, timeout: float = 45
) -> Iterator[Served]:
    """``atelier <args>`` until /healthz answers on ``port`` (PORT in ``env`` unless given)."""
    port = port or free_port()
    env = {"PORT": str(port), **env}
    log = cwd / f"atelier-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ATELIER, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    served = Served(f"http://127.0.0.1:{port}", port, log, proc)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{served.base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"atelier {' '.join(args)} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
