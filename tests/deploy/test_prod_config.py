"""Prod refuses the embedded fallbacks and a missing secret: one readable line, non-zero exit.

Each case runs the real `atelier` command in a clean environment, as Cloud Run would start it.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from backend.cli import EXIT_CONFIG
from tests.deploy.processes import atelier_env, run_atelier, s3_url, serving
from tests.servers import S3Server, Server

SECRET = secrets.token_urlsafe(48)


def _prod(pg: str, redis: str, storage: str) -> dict[str, str]:
    return {
        "ATELIER_ENV": "prod",
        "ATELIER_SECRET_KEY": SECRET,
        "DATABASE_URL": pg,
        "REDIS_URL": redis,
        "STORAGE_URL": storage,
        "ATELIER_PUBLIC_BASE_URL": "https://atelier-api-xyz-ew.a.run.app",
    }


FAKE = _prod(
    "postgresql+asyncpg://atelier:pw@127.0.0.1:1/atelier",
    "redis://127.0.0.1:1/0",
    "s3://atelier?endpoint_url=http://127.0.0.1:1",
)


@pytest.mark.parametrize("command", ["serve", "worker", "migrate"])
@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("DATABASE_URL", "ATELIER_DATABASE_URL"),
        ("REDIS_URL", "ATELIER_REDIS_URL"),
        ("STORAGE_URL", "ATELIER_STORAGE_URL"),
        ("ATELIER_SECRET_KEY", "ATELIER_SECRET_KEY"),
    ],
)
def test_prod_refuses_to_start_without(
    command: str, missing: str, named: str, tmp_path: Path
) -> None:
    env = atelier_env(**{k: v for k, v in FAKE.items() if k != missing})
    done = run_atelier(command, env=env, cwd=tmp_path)
    assert done.returncode == EXIT_CONFIG, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("atelier: configuration error: "), lines[0]
    assert named in lines[0]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    # Nothing embedded was set up on the way: no SQLite file, no storage folder.
    assert list(tmp_path.iterdir()) == []


def test_prod_without_anything_names_everything_at_once(tmp_path: Path) -> None:
    done = run_atelier("serve", env=atelier_env(ATELIER_ENV="prod"), cwd=tmp_path)
    assert done.returncode == EXIT_CONFIG
    [line] = done.stderr.splitlines()
    for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "STORAGE_URL"):
        assert f"ATELIER_{name}" in line


def test_the_image_default_is_prod(tmp_path: Path) -> None:
    """No ATELIER_ENV at all (the Dockerfile sets prod; a forgotten variable must not be dev)."""
    done = run_atelier("worker", env=atelier_env(), cwd=tmp_path)
    assert done.returncode == EXIT_CONFIG
    assert "ATELIER_REDIS_URL" in done.stderr


def test_prod_serves_on_the_real_services(
    tmp_path: Path, pg_server: Server, redis_server: Server, s3_server: S3Server
) -> None:
    env = atelier_env(**_prod(pg_server.url, redis_server.url, s3_url(s3_server)))
    with serving("serve", env=env, cwd=tmp_path) as served:
        health = httpx.get(f"{served.base}/health", timeout=10)
        assert health.status_code == 200, health.text
        assert health.json()["checks"] == {"database": "ok", "redis": "ok", "storage": "ok"}
    assert not (tmp_path / "var").exists()
