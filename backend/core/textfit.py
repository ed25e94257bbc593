"""Text fit for Postgres, checked once for every request rather than per endpoint.

Postgres ``text`` (and ``jsonb``) cannot hold NUL, and no UTF-8 encoding exists for a lone
surrogate (which JSON's ``\\ud800`` escapes can produce); either reached the driver as a 500.
One app-wide dependency refuses them in query and path parameters, JSON bodies and parsed form
fields with the same 422 ``request.validation`` answer a schema error gets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from fastapi import params
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile
from starlette.requests import HTTPConnection, Request

UNFIT = re.compile("[\x00\ud800-\udfff]")
_MESSAGE = "Text must not contain NUL or unpaired surrogate characters."
Loc = tuple[str | int, ...]


def unfit_locations(value: Any, loc: Loc) -> Iterator[Loc]:
    """Where in a decoded JSON value (keys included) a string holds an unfit character."""
    if isinstance(value, str):
        if UNFIT.search(value):
            yield loc
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and UNFIT.search(key):
                yield (*loc, key)
            yield from unfit_locations(item, (*loc, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from unfit_locations(item, (*loc, index))


def _parses_form(connection: HTTPConnection) -> bool:
    # Only forms FastAPI parsed itself (cached on the request): parsing one here would read a
    # file upload an endpoint means to stream or bound on its own.
    route = connection.scope.get("route")
    body = route.body_field if isinstance(route, APIRoute) else None
    return body is not None and isinstance(body.field_info, params.Form)


async def _body_locations(request: Request) -> list[Loc]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            document = json.loads(await request.body())
        except ValueError:
            return []  # FastAPI answers malformed JSON itself
        return list(unfit_locations(document, ("body",)))
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        if not _parses_form(request):
            return []
        found: list[Loc] = []
        for key, value in (await request.form()).multi_items():
            text = value.filename or "" if isinstance(value, UploadFile) else value
            if UNFIT.search(key) or UNFIT.search(text):
                found.append(("body", key))
        return found
    return []


async def text_fit(connection: HTTPConnection) -> None:
    found: list[Loc] = [
        ("query", key)
        for key, value in connection.query_params.multi_items()
        if UNFIT.search(key) or UNFIT.search(value)
    ]
    found += [
        ("path", key)
        for key, value in connection.path_params.items()
        if isinstance(value, str) and UNFIT.search(value)
    ]
    if isinstance(connection, Request) and connection.method not in ("GET", "HEAD", "OPTIONS"):
        found += await _body_locations(connection)
    if not found:
        return
    errors = [{"type": "string_unfit", "loc": loc, "msg": _MESSAGE} for loc in found]
    if isinstance(connection, Request):
        raise RequestValidationError(errors)
    raise WebSocketRequestValidationError(errors)
