"""``atelier``: serve, worker, migrate, create-admin, sketch, gallery."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.config import ConfigError, get_settings

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


def _configure_logging() -> None:
    from backend.core.logging import configure_logging, install_exception_hooks

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    if settings.log_json:
        install_exception_hooks()


# httptools buffers request headers without any bound (40 MB of headers were accepted); h11
# refuses a request line plus headers past this size, answering 400 and closing.
MAX_HEADER_BYTES = 64 * 1024
HTTP_LIMITS: dict[str, Any] = {"http": "h11", "h11_max_incomplete_event_size": MAX_HEADER_BYTES}


def _serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from backend.core.logging import logging_config
    from backend.realtime.transport import WEBSOCKET_OPTIONS

    # --host/--port win over the environment, and the settings (signed URLs, allowed origins)
    # must be derived from the address actually served: hand them over as settings.
    if args.host:
        os.environ["ATELIER_HOST"] = args.host
    if args.port:
        os.environ["ATELIER_PORT"] = str(args.port)
    get_settings.cache_clear()
    settings = get_settings()
    _configure_logging()
    if args.migrate:
        _migrate(args)
    uvicorn.run(
        _serving_app,
        factory=True,
        host=settings.host,
        port=settings.port,
        # uvicorn would take the leftmost X-Forwarded-For entry, which the client writes; the
        # app reads it from the right instead (TRUSTED_PROXY_HOPS, backend/core/proxy.py).
        proxy_headers=False,
        # uvicorn would otherwise install its plain-text handlers; ours writes JSON lines.
        log_config=logging_config(settings.log_level, json=settings.log_json),
        access_log=False,
        # uvicorn's websockets-sansio protocol with a shared-frame write, compression off.
        **WEBSOCKET_OPTIONS,
        # Cloud Run sends SIGTERM and kills 10 s later: uvicorn closes sockets with 1012
        # (service restart, a reconnect hint) and gives requests this long to finish.
        timeout_graceful_shutdown=8,
        **HTTP_LIMITS,
    )
    return 0


def _serving_app() -> Any:
    """The application ``atelier serve`` runs: built, then the start-up heap frozen (see
    ``backend.core.gctune``), so garbage collections stop walking it while sockets are open."""
    from backend.core.gctune import tune_gc
    from backend.main import create_app

    app = create_app()
    tune_gc()
    return app


def _migrate(_: argparse.Namespace) -> int:
    from backend.core.migrations import upgrade

    _configure_logging()
    upgrade(get_settings().database_url)
    return 0


def _worker(_: argparse.Namespace) -> int:
    import uvloop

    from backend.composition import AppResources
    from backend.tasks.worker import serve_worker

    settings = get_settings()
    _configure_logging()
    if settings.redis_url is None:
        raise SystemExit("atelier worker needs REDIS_URL; without it the API runs its own worker")
    # uvloop, as uvicorn gives the API: a worker is mostly socket I/O to Redis and Postgres,
    # and the default loop's Python transports cost it about a fifth of its CPU.
    uvloop.run(serve_worker(AppResources(settings)))
    return 0


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise _CliError("the passwords differ")
    return first


def _database_error(exc: Exception) -> _CliError:
    """One line for what an operator can act on: a database that is down or not migrated."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
    if "no such table" in text or "does not exist" in text:
        return _CliError(f"the database has no schema yet ({text}): run `atelier migrate` first")
    return _CliError(f"cannot use the database: {type(exc).__name__}: {text}")


async def _create_admin_async(email: str, *, reset_password: bool) -> str:
    from sqlalchemy.exc import SQLAlchemyError

    from backend.auth import service
    from backend.core.db import Database
    from backend.core.errors import AppError

    db = Database(get_settings().database_url)
    try:
        async with db.sessionmaker() as session:
            exists = await service.user_exists(session, email=email)
            # An existing account keeps its password unless a reset is asked for explicitly.
            password = _read_password() if reset_password or not exists else None
            user, outcome = await service.ensure_admin(
                session, email=email, password=password, reset_password=reset_password
            )
            await session.commit()
        # API instances cache live sessions: tell them the account changed (ended sessions, role).
        redis_url = get_settings().redis_url
        if redis_url:
            from backend.auth.sessions import publish_revocation
            from backend.core.redis import create_redis

            redis = create_redis(redis_url)
            try:
                await publish_revocation(redis, users=[user.id])
            finally:
                await redis.aclose()
    except AppError as exc:
        raise _CliError(exc.detail or exc.code) from None
    except (SQLAlchemyError, OSError) as exc:
        raise _database_error(exc) from None
    finally:
        await db.dispose()
    if outcome == "created":
        return f"created admin {user.email} ({user.id})"
    if outcome == "reset":
        return f"reset the password of admin {user.email} ({user.id}); its sessions were ended"
    return (
        f"promoted admin {user.email} ({user.id}); the password is unchanged "
        "(--reset-password sets a new one)"
    )


def _create_admin(args: argparse.Namespace) -> int:
    message = asyncio.run(_create_admin_async(args.email, reset_password=args.reset_password))
    print(message)  # noqa: T201 - CLI output
    return 0


class _CliError(Exception):
    """A user mistake or unusable input: reported on stderr with exit code 2, no traceback."""


_OUTPUT_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def _read_input(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _CliError(f"{path}: no such file") from None
    except OSError as exc:
        raise _CliError(f"{path}: {exc.strerror or exc}") from None


def _output_format(path: Path) -> str:
    fmt = _OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise _CliError(f"{path}: the output must end in .png, .jpg, .jpeg or .webp")
    return fmt


def _write_output(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise _CliError(f"{path}: {exc.strerror or exc}") from None


def _sketch(args: argparse.Namespace) -> int:
    from backend.sketches.styles import SketchParams, sketch_bytes

    source = Path(args.input)
    output = (
        Path(args.output)
        if args.output
        else source.with_name(f"{source.stem}_{args.style}_{args.method}.png")
    )
    try:
        params = SketchParams(
            intensity=args.intensity, max_side=args.max_side, format=_output_format(output)
        )
        data = _read_input(source)
        started = time.perf_counter()
        encoded, width, height = sketch_bytes(data, args.style, args.method, params)
    except ValueError as exc:
        raise _CliError(str(exc)) from None
    elapsed_ms = (time.perf_counter() - started) * 1000
    _write_output(output, encoded)
    print(f"{output}: {args.style}/{args.method}, {width}x{height}, {elapsed_ms:.0f} ms")  # noqa: T201
    return 0


def _gallery(args: argparse.Namespace) -> int:
    from backend.sketches.gallery import contact_sheet
    from backend.sketches.styles import encode, load

    source, output = Path(args.input), Path(args.output)
    fmt = _output_format(output)
    if not 64 <= args.cell <= 2048:
        raise _CliError("--cell must be from 64 to 2048 pixels")
    if args.colors and (fmt != "png" or not 2 <= args.colors <= 256):
        raise _CliError("--colors takes 2 to 256 and needs a .png output")
    try:
        # The sheet draws each result at twice the cell size, so nothing larger is needed.
        pixels = load(_read_input(source), max_side=2 * args.cell)
        sheet = contact_sheet(pixels, cell=args.cell)
        data = _indexed_png(sheet, args.colors) if args.colors else encode(sheet, fmt)
    except ValueError as exc:
        raise _CliError(str(exc)) from None
    _write_output(output, data)
    height, width = sheet.shape[:2]
    print(f"{output}: contact sheet {width}x{height}, {len(data) // 1024} KiB")  # noqa: T201
    return 0


def _indexed_png(image_bgr: npt.NDArray[np.uint8], colors: int) -> bytes:
    """A palette PNG: textured sheets shrink several times, at the cost of some banding."""
    import io

    import numpy as np
    from PIL import Image

    rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
    # Median cut keeps pure white and black exactly, which the sheet's paper and ink need.
    indexed = Image.fromarray(rgb).quantize(colors, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    indexed.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Atelier image backend")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="serve the API (and the embedded worker when no REDIS_URL)"
    )
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--migrate", action="store_true", help="run migrations first")
    serve.set_defaults(func=_serve)

    worker = sub.add_parser("worker", help="run background tasks from the Redis queue")
    worker.set_defaults(func=_worker)

    migrate = sub.add_parser("migrate", help="upgrade the database to the newest schema")
    migrate.set_defaults(func=_migrate)

    admin = sub.add_parser(
        "create-admin",
        help="create an admin or promote an existing user (password from the prompt or stdin)",
    )
    admin.add_argument("email")
    admin.add_argument(
        "--reset-password",
        action="store_true",
        help="also set a new password on an existing account and end its sessions",
    )
    admin.set_defaults(func=_create_admin)

    sketch = sub.add_parser("sketch", help="draw a local image file in one style")
    sketch.add_argument("input", metavar="IN", help="a JPEG, PNG, WebP or GIF file")
    sketch.add_argument("-s", "--style", default="pencil", help="pencil (default), charcoal, …")
    sketch.add_argument(
        "-m", "--method", default="basic", help="basic (default), advanced, artistic"
    )
    sketch.add_argument(
        "-o", "--output", metavar="OUT", help="output file; .png, .jpg or .webp picks the format"
    )
    sketch.add_argument("--intensity", type=float, default=0.5, help="0 to 1 (default 0.5)")
    sketch.add_argument("--max-side", type=int, default=2048, help="long side bound (2048)")
    sketch.set_defaults(func=_sketch)

    gallery = sub.add_parser("gallery", help="all styles and methods on one contact sheet")
    gallery.add_argument("input", metavar="IN", help="a JPEG, PNG, WebP or GIF file")
    gallery.add_argument("-o", "--output", metavar="SHEET", required=True, help="e.g. sheet.png")
    gallery.add_argument("--cell", type=int, default=320, help="cell size in pixels (320)")
    gallery.add_argument(
        "--colors", type=int, default=0, help="write an indexed PNG with this many colours"
    )
    gallery.set_defaults(func=_gallery)
    return parser


# sysexits.h EX_CONFIG: the process was given settings it must not run with.
EXIT_CONFIG = 78
_NEEDS_SETTINGS = {"serve", "worker", "migrate", "create-admin"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in _NEEDS_SETTINGS:
            get_settings()  # refuse bad configuration before anything starts
        result: int = args.func(args)
    except ConfigError as exc:
        # One line an operator (or Cloud Logging) can read, never a validation traceback.
        print(f"atelier: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_CONFIG
    except _CliError as exc:
        # argparse's own convention: usage mistakes exit with 2 and a one-line message.
        print(f"atelier {args.command}: error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
