"""RFC 9457 problem details: one exception type for domain errors, one handler for everything.

Features raise ``AppError`` subclasses (or ``AppError`` itself) with a stable ``code``; the
handlers below turn those, FastAPI's validation errors, routing errors and anything unexpected
into ``application/problem+json`` so that no client ever has to parse an HTML error page.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"


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


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


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
