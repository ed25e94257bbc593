"""The client address cannot be forged with X-Forwarded-For.

Cloud Run appends the address it saw to whatever X-Forwarded-For the client sent. The image's own
start command (Dockerfile ENV and CMD, run here as a process) must take the client from the
right, so rotating the leftmost entry neither escapes the per-IP login limit nor forges the
address in the logs.
"""

from __future__ import annotations

import json
import random
import shlex
import uuid
from pathlib import Path

import httpx
import pytest

from backend.core.proxy import client_from
from tests.deploy.processes import atelier_env, s3_url, serving
from tests.servers import S3Server, Server

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"
ATTEMPTS = 40
PER_IP = 30  # the default ATELIER_LOGIN_MAX_FAILURES_PER_IP


def image_start() -> tuple[list[str], dict[str, str]]:
    """The runtime stage's CMD and ENV, read from the Dockerfile."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    runtime = text[text.rindex("\nFROM ") :]
    env: dict[str, str] = {}
    command: list[str] = []
    for line in runtime.splitlines():
        if line.startswith("ENV "):
            env.update(part.split("=", 1) for part in shlex.split(line[4:]) if "=" in part)  # type: ignore[misc]
        elif line.startswith("CMD "):
            command = json.loads(line[4:])
    assert command[:2] == ["atelier", "serve"], command
    return command, env


@pytest.mark.parametrize(
    ("header", "hops", "client"),
    [
        (["198.51.100.9"], 1, "198.51.100.9"),
        (["6.6.6.6", "198.51.100.9"], 1, "198.51.100.9"),
        (["6.6.6.6, 7.7.7.7", "198.51.100.9"], 1, "198.51.100.9"),
        (["6.6.6.6", "198.51.100.9", "10.0.0.1"], 2, "198.51.100.9"),
        (["[2001:db8::1]:443"], 1, "2001:db8::1"),
        (["198.51.100.9:5555"], 1, "198.51.100.9"),
        (["not-an-address"], 1, None),
        ([], 1, None),
        (["198.51.100.9"], 2, None),
        (["6.6.6.6"], 0, None),
    ],
)
def test_client_is_taken_from_the_right(header: list[str], hops: int, client: str | None) -> None:
    entries = [e.strip() for value in header for e in value.split(",")]
    assert client_from(entries, hops) == client


def test_the_image_trusts_one_hop_and_not_uvicorn() -> None:
    command, env = image_start()
    assert env["ATELIER_TRUSTED_PROXY_HOPS"] == "1"
    assert not any("forwarded" in part for part in command)


def test_rotating_the_leftmost_entry_does_not_escape_the_limit(
    tmp_path: Path, pg_server: Server, redis_server: Server, s3_server: S3Server
) -> None:
    command, image_env = image_start()
    # Loopback only here; everything else exactly as the image starts.
    args = [a if a != "0.0.0.0" else "127.0.0.1" for a in command[1:]]
    image_env.pop("PATH", None)
    image_env.pop("PORT", None)
    env = atelier_env(
        **image_env,
        ATELIER_SECRET_KEY="proxy-test-" + "k" * 40,
        DATABASE_URL=pg_server.url,
        REDIS_URL=redis_server.url,
        STORAGE_URL=s3_url(s3_server),
        ATELIER_PUBLIC_BASE_URL="https://atelier-api-xyz-ew.a.run.app",
    )
    assert env["ATELIER_ENV"] == "prod"
    real = f"198.51.{random.randrange(100, 200)}.{random.randrange(1, 255)}"
    answers = []
    with (
        serving(*args, env=env, cwd=tmp_path) as served,
        httpx.Client(base_url=served.base, timeout=10) as client,
    ):
        for attempt in range(ATTEMPTS):
            forged = f"203.0.113.{attempt + 1}"
            answer = client.post(
                "/api/auth/login",
                # A different unknown email each time: only the per-IP limit can stop this.
                json={"email": f"{uuid.uuid4().hex}@example.com", "password": "wrong password"},
                headers={"X-Forwarded-For": f"{forged}, {real}", "X-Forwarded-Proto": "https"},
            )
            answers.append(answer.status_code)
    assert answers[:PER_IP] == [401] * PER_IP
    assert answers[PER_IP:] == [429] * (ATTEMPTS - PER_IP), answers

    logged = [json.loads(line) for line in served.lines() if line.startswith("{")]
    login_lines = [line for line in logged if line.get("path") == "/api/auth/login"]
    assert len(login_lines) == ATTEMPTS
    assert {line.get("client_ip") for line in login_lines} == {real}
    assert not any("203.0.113." in line for line in served.lines())
