"""``atelier``: serve, worker, migrate, create-admin."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from backend.config import get_settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    if args.migrate:
        _migrate(args)
    uvicorn.run(
        "backend.main:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        # Cloud Run and load balancers put the client address in X-Forwarded-For.
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips,
        log_config=None,
        ws="websockets-sansio",
        ws_ping_interval=25,
        ws_ping_timeout=20,
    )
    return 0


def _migrate(_: argparse.Namespace) -> int:
    from backend.core.migrations import upgrade

    upgrade(get_settings().database_url)
    return 0


def _worker(_: argparse.Namespace) -> int:
    from backend.core.logging import configure_logging
    from backend.core.resources import Resources
    from backend.tasks.worker import serve_worker

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    if settings.redis_url is None:
        raise SystemExit("atelier worker needs REDIS_URL; without it the API runs its own worker")
    asyncio.run(serve_worker(Resources(settings)))
    return 0


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise SystemExit("The passwords differ.")
    return first


async def _create_admin_async(email: str, password: str) -> str:
    from backend.auth import service
    from backend.core.db import Database
    from backend.core.errors import AppError

    db = Database(get_settings().database_url)
    try:
        async with db.sessionmaker() as session:
            try:
                user, created = await service.ensure_admin(session, email=email, password=password)
            except AppError as exc:
                raise SystemExit(f"error: {exc.detail or exc.code}") from exc
            await session.commit()
            return f"{'created' if created else 'promoted'} admin {user.email} ({user.id})"
    finally:
        await db.dispose()


def _create_admin(args: argparse.Namespace) -> int:
    message = asyncio.run(_create_admin_async(args.email, _read_password()))
    print(message)  # noqa: T201 - CLI output
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Atelier image backend")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="serve the API (and the embedded worker when no REDIS_URL)"
    )
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--migrate", action="store_true", help="run migrations first")
    serve.add_argument("--forwarded-allow-ips", default="127.0.0.1")
    serve.set_defaults(func=_serve)

    worker = sub.add_parser("worker", help="run background tasks from the Redis queue")
    worker.set_defaults(func=_worker)

    migrate = sub.add_parser("migrate", help="upgrade the database to the newest schema")
    migrate.set_defaults(func=_migrate)

    admin = sub.add_parser(
        "create-admin", help="create an admin (password from the prompt or stdin)"
    )
    admin.add_argument("email")
    admin.set_defaults(func=_create_admin)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
