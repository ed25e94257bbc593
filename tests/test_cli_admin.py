"""`atelier create-admin` as an operator runs it outside dev: on Postgres, with clear one-line
errors, and never silently replacing an existing account's password."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import select

from backend.auth.models import AuthSession, Role, User
from backend.auth.passwords import verify_password
from backend.core.db import Database
from tests.conftest import PASSWORD, TEST_SECRET, unique_email
from tests.deploy.processes import atelier_env, run_atelier
from tests.servers import Server

NEW_PASSWORD = "a different battery staple"


def _env(database_url: str) -> dict[str, str]:
    return atelier_env(
        ATELIER_ENV="test", ATELIER_SECRET_KEY=TEST_SECRET, DATABASE_URL=database_url
    )


async def _user(db: Database, email: str) -> User:
    async with db.sessionmaker() as session:
        user = await session.scalar(select(User).where(User.email == email))
        assert user is not None
        return user


async def _sign_in_session(db: Database, user_id: uuid.UUID) -> uuid.UUID:
    async with db.sessionmaker() as session:
        row = AuthSession(user_id=user_id, user_agent="browser")
        session.add(row)
        await session.commit()
        return row.id


async def _revoked(db: Database, session_id: uuid.UUID) -> str | None:
    async with db.sessionmaker() as session:
        row = await session.get(AuthSession, session_id)
        assert row is not None
        return row.revoked_reason


async def test_create_promote_and_reset_on_postgres(
    tmp_path: Path, pg_server: Server, committed_database: Database
) -> None:
    env, email = _env(pg_server.url), unique_email("root")

    made = run_atelier("create-admin", email, env=env, cwd=tmp_path, stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"created admin {email} (")
    assert made.stderr == ""
    user = await _user(committed_database, email)
    assert user.role == Role.admin
    live = await _sign_in_session(committed_database, user.id)

    # Again without the flag: nothing is read from stdin, the password and sessions stay.
    again = run_atelier("create-admin", email, env=env, cwd=tmp_path, stdin=NEW_PASSWORD + "\n")
    assert again.returncode == 0, again.stderr
    assert f"promoted admin {email}" in again.stdout
    assert "password is unchanged" in again.stdout
    kept = await _user(committed_database, email)
    assert kept.password_hash == user.password_hash
    assert (await verify_password(PASSWORD, kept.password_hash))[0]
    assert await _revoked(committed_database, live) is None

    reset = run_atelier(
        "create-admin",
        email,
        "--reset-password",
        env=env,
        cwd=tmp_path,
        stdin=NEW_PASSWORD + "\n",
    )
    assert reset.returncode == 0, reset.stderr
    assert f"reset the password of admin {email}" in reset.stdout
    changed = await _user(committed_database, email)
    assert (await verify_password(NEW_PASSWORD, changed.password_hash))[0]
    assert not (await verify_password(PASSWORD, changed.password_hash))[0]
    assert await _revoked(committed_database, live) == "password_reset"


async def test_promoting_a_user_keeps_their_password(
    tmp_path: Path, pg_server: Server, committed_database: Database
) -> None:
    from backend.auth.service import create_user

    email = unique_email("member")
    async with committed_database.sessionmaker() as session:
        member = await create_user(session, email=email, password=PASSWORD)
        await session.commit()
    live = await _sign_in_session(committed_database, member.id)
    done = run_atelier("create-admin", email, env=_env(pg_server.url), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    promoted = await _user(committed_database, email)
    assert promoted.role == Role.admin
    assert promoted.password_hash == member.password_hash
    assert await _revoked(committed_database, live) is None


def _one_error_line(done_stderr: str) -> str:
    lines = done_stderr.splitlines()
    assert len(lines) == 1, done_stderr
    assert "Traceback" not in done_stderr
    return lines[0]


def test_errors_are_one_line(tmp_path: Path, pg_server: Server) -> None:
    weak = run_atelier(
        "create-admin", unique_email(), env=_env(pg_server.url), cwd=tmp_path, stdin="short\n"
    )
    assert weak.returncode == 2
    line = _one_error_line(weak.stderr)
    assert line.startswith("atelier create-admin: error: ")
    assert "at least 10 characters" in line

    reset_nobody = run_atelier(
        "create-admin", unique_email(), "--reset-password", env=_env(pg_server.url),
        cwd=tmp_path, stdin=PASSWORD + "\n",
    )  # fmt: skip
    # Resetting an account that does not exist creates it, with the password given.
    assert reset_nobody.returncode == 0, reset_nobody.stderr

    unmigrated = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    empty = run_atelier(
        "create-admin", unique_email(), env=_env(unmigrated), cwd=tmp_path, stdin=PASSWORD + "\n"
    )
    assert empty.returncode == 2
    assert "atelier migrate" in _one_error_line(empty.stderr)

    down = "postgresql+asyncpg://atelier:pw@127.0.0.1:1/atelier"
    unreachable = run_atelier(
        "create-admin", unique_email(), env=_env(down), cwd=tmp_path, stdin=PASSWORD + "\n"
    )
    assert unreachable.returncode == 2
    assert "cannot use the database" in _one_error_line(unreachable.stderr)

    no_secret = atelier_env(ATELIER_ENV="test", DATABASE_URL=pg_server.url)
    refused = run_atelier("create-admin", unique_email(), env=no_secret, cwd=tmp_path)
    assert refused.returncode == 78
    assert "ATELIER_SECRET_KEY" in _one_error_line(refused.stderr)
