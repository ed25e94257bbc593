"""RFC 9457 problem details: one exception type for domain errors, one handler for everything.

Features raise ``AppError`` subclasses (or ``AppError`` itself) with a stable ``code``; the
handlers below turn those, FastAPI's validation errors, routing errors and anything unexpected
into ``application/problem+json`` so that no client ever has to parse an HTML error page.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
# How long a client should wait before retrying while a dependency is down: about one restart.
UNAVAILABLE_RETRY_AFTER_SECONDS = 5
log = structlog.get_logger(__name__)


class Problem(BaseModel):
    """The problem document, for OpenAPI; extra members (``errors``, ids) are allowed."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    code: str


class AppError(Exception):
    status: int = 400
    code: str = "error"
    title: str | None = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or code or self.code)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})
        self.extra = extra


class NotFound(AppError):
    status = 404
    code = "not_found"


class Unauthorized(AppError):
    status = 401
    code = "auth.unauthenticated"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": 'Cookie, ApiKey realm="atelier"'})
        super().__init__(detail, **kwargs)


class Forbidden(AppError):
    status = 403
    code = "auth.forbidden"


class Conflict(AppError):
    status = 409
    code = "conflict"


class TooManyRequests(AppError):
    status = 429
    code = "rate_limited"

    def __init__(self, detail: str | None = None, *, retry_after: int, **kwargs: Any) -> None:
        retry_after = max(1, int(retry_after))
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, **kwargs)
        self.extra.setdefault("retry_after", retry_after)


class RequestTooLarge(StarletteHTTPException):
    """A body past its bound; an HTTP exception so that body parsing passes it on unchanged."""

    code = "request.too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than the limit of {limit} bytes.")


def problem_response(
    status: int,
    code: str,
    detail: str | None = None,
    *,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update(extra)
    return JSONResponse(
        jsonable_encoder(body),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_JSON,
    )


# Starlette raises these for routing; give them codes as stable as the domain ones.
_HTTP_CODES = {
    400: "http.bad_request",
    401: "auth.unauthenticated",
    403: "auth.forbidden",
    404: "http.not_found",
    405: "http.method_not_allowed",
    413: "http.payload_too_large",
    415: "http.unsupported_media_type",
}


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return problem_response(
        exc.status, exc.code, exc.detail, title=exc.title, headers=exc.headers, **exc.extra
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
    # Pydantic's "input" echoes what the client sent (passwords included); drop it from answers.
    for err in errors:
        err.pop("input", None)
    malformed = any(err.get("type") == "json_invalid" for err in errors)
    return problem_response(
        422,
        "request.malformed_json" if malformed else "request.validation",
        "The request body is not valid JSON." if malformed else "The request is not valid.",
        errors=errors,
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = getattr(exc, "code", None) or _HTTP_CODES.get(exc.status_code, f"http.{exc.status_code}")
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(exc.status_code, code, detail, headers=exc.headers)


_OUTAGE_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ETIMEDOUT,
        errno.EPIPE,
    }
)


def _outage_classes() -> tuple[type[Exception], ...]:
    # Imported here so this module stays importable without the drivers' import cost at the
    # top, and every class the handler is installed for is listed in one place.
    import asyncpg
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    return (
        OSError,  # builtin ConnectionError and TimeoutError (asyncio's too) included
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.OperatorInterventionError,
        DBAPIError,
        PoolTimeout,
        RedisConnectionError,
        RedisTimeoutError,
    )


def dependency_down(exc: BaseException) -> str | None:
    """ "database" or "redis" when ``exc`` means that dependency is unreachable, else None."""
    import asyncpg
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return "redis"
    if isinstance(exc, PoolTimeout):
        return "database"
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            return "database"
        cause = exc.orig.__cause__ if exc.orig is not None else None
        return "database" if cause is not None and dependency_down(cause) else None
    if isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.exceptions.OperatorInterventionError,
    ):
        return "database"
    if isinstance(exc, TimeoutError | ConnectionError) or (
        # asyncio's create_connection to every address of a host failed.
        isinstance(exc, OSError)
        and (exc.errno in _OUTAGE_ERRNOS or str(exc).startswith("Multiple exceptions: [Errno"))
    ):
        # Drivers let a failed connect through unwrapped; whose code raised it tells which.
        return _raised_in(exc) or "dependency"
    return None


def _raised_in(exc: BaseException) -> str | None:
    tb = exc.__traceback__
    found = None
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.startswith(("asyncpg", "sqlalchemy", "aiosqlite")):
            found = "database"
        elif module.startswith("redis"):
            found = "redis"
        tb = tb.tb_next
    return found


def unavailable_response(dependency: str) -> JSONResponse:
    return problem_response(
        503,
        "service.unavailable",
        "A service this request needs is unavailable; try again shortly.",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
        dependency=dependency,
        retry_after=UNAVAILABLE_RETRY_AFTER_SECONDS,
    )


async def _outage_error(_: Request, exc: Exception) -> JSONResponse:
    dependency = dependency_down(exc)
    if dependency is None:
        raise exc  # not an outage: the outer middleware answers 500 and logs it
    log.warning("dependency_unavailable", dependency=dependency, error=type(exc).__name__)
    return unavailable_response(dependency)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # A database or Redis outage is a 503 with Retry-After, not a 500 "bug".
    for cls in _outage_classes():
        app.add_exception_handler(cls, _outage_error)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem+json answers."""
    return {
        status: {
            "model": Problem,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
