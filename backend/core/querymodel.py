"""Query parameters read through one pydantic model, for the hottest endpoints.

FastAPI examines each declared query parameter's annotation again on every request (about ten
µs a parameter): the gallery's listing, with seven of them, spent more on that than on its
database read. An endpoint on this path declares ``openapi_extra=query_openapi(Model)``, so
the schema and /docs still show every parameter, and calls ``parse_query(Model, request)``: one
validation of the model, its errors shaped as FastAPI's own (``loc`` starting with ``"query"``),
so a bad value is the same 422 ``request.validation``.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def _inlined(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inlined(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inlined(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inlined(item, defs) for item in node]
    return node


def query_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model``'s fields as query parameters, as FastAPI would.
    Referenced schemas (enums) are written inline: ``openapi_extra`` cannot add components."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    required = set(schema.get("required", ()))
    parameters = []
    for name, raw in schema["properties"].items():
        field = _inlined(raw, defs)
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": field,
        }
        if "description" in field:
            parameter["description"] = field["description"]
        parameters.append(parameter)
    return {"parameters": parameters}


@cache
def _defaults(model: type[M]) -> M:
    return model()


def parse_query(model: type[M], request: Request) -> M:
    """``model`` from the request's query string; unknown parameters are ignored, and a name
    given twice takes its last value (both as FastAPI does)."""
    if not request.scope["query_string"]:
        # The usual request (a gallery's first page): the defaults, validated once.
        return _defaults(model)
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("query", *error["loc"])} for error in exc.errors(include_url=False)
        ]
        raise RequestValidationError(errors) from None
