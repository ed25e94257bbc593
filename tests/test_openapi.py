"""``docs/API.md``, the project's own API reference, matches what the app serves.

Every endpoint row in the reference must be served, every served endpoint (in ``/openapi.json``
or outside it: the WebSocket, local storage, the docs pages) must have a row, and a row's
status codes must be exactly those of its OpenAPI operation. Errors are problem+json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import Mount, Route, WebSocketRoute

from backend.config import Settings
from backend.main import create_app

API_MD = Path(__file__).resolve().parents[1] / "docs" / "API.md"
# `| GET | `/api/images/{image_id}` | request | 200, 401 | notes |`
ROW = re.compile(
    r"^\|\s*(GET|POST|PUT|PATCH|DELETE|HEAD|WS)\s*\|\s*`(/[^`]*)`\s*\|[^|]*\|([^|]*)\|", re.M
)
STATUS = re.compile(r"\b[1-5]\d\d\b")
Endpoint = tuple[str, str]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    # Building the schema touches no server: an app on embedded settings is enough.
    folder = tmp_path_factory.mktemp("openapi")
    return create_app(
        Settings(
            env="test",
            secret_key="openapi-test-" + "x" * 40,
            database_url=f"sqlite+aiosqlite:///{folder / 'db.sqlite'}",
            storage_url=f"file://{folder / 'storage'}",
        )
    )


def documented() -> dict[Endpoint, set[str]]:
    assert API_MD.exists(), f"{API_MD} is missing"
    rows: dict[Endpoint, set[str]] = {}
    for method, path, answers in ROW.findall(API_MD.read_text()):
        assert (method, path) not in rows, f"{method} {path} is documented twice"
        rows[(method, path)] = set(STATUS.findall(answers))
    return rows


def in_schema(app: FastAPI) -> dict[Endpoint, set[str]]:
    return {
        (method.upper(), path): set(operation["responses"])
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
    }


def outside_schema(app: FastAPI) -> set[Endpoint]:
    """Routes the OpenAPI schema leaves out, with the path syntax of the reference."""
    found: set[Endpoint] = set()
    # Included routers are resolved lazily; their route contexts carry the full paths.
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", context.path or "")
        if isinstance(route, APIRoute):
            if not context.include_in_schema:
                found.update((m, path) for m in context.methods or set())
        elif isinstance(route, WebSocketRoute):
            found.add(("WS", path))
        elif isinstance(route, Route):
            # Starlette adds HEAD to every GET route on its own; only GET is documented.
            found.update((m, path) for m in (context.methods or set()) - {"HEAD"})
        elif isinstance(route, Mount):
            found.add(("GET", path + "/{path}"))
    return found


def test_the_reference_parses() -> None:
    rows = documented()
    assert ("POST", "/api/auth/login") in rows
    assert ("WS", "/ws") in rows
    assert rows[("GET", "/api/images/{image_id}")] == {"200", "401", "404", "422"}
    assert all(codes for codes in rows.values()), "every row lists its status codes"


def test_every_documented_endpoint_is_served(app: FastAPI) -> None:
    served = set(in_schema(app)) | outside_schema(app)
    missing = set(documented()) - served
    assert not missing, f"in docs/API.md but not served: {sorted(missing)}"


def test_every_served_endpoint_is_documented(app: FastAPI) -> None:
    served = set(in_schema(app)) | outside_schema(app)
    undocumented = served - set(documented())
    assert not undocumented, f"served but missing from docs/API.md: {sorted(undocumented)}"


def test_documented_status_codes_match_the_schema(app: FastAPI) -> None:
    rows = documented()
    wrong = {
        endpoint: {"docs/API.md": sorted(rows[endpoint]), "openapi": sorted(codes)}
        for endpoint, codes in in_schema(app).items()
        if endpoint in rows and rows[endpoint] != codes
    }
    assert not wrong, f"status codes differ: {wrong}"


def test_error_answers_are_documented_as_problem_json(app: FastAPI) -> None:
    schema = app.openapi()
    assert "Problem" in schema["components"]["schemas"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                # /health and /readyz answer 503 with their own body: the checks, not a problem.
                if status.startswith(("4", "5")) and path not in ("/health", "/readyz"):
                    assert "application/problem+json" in answer.get("content", {}), (
                        method,
                        path,
                        status,
                    )


def test_security_schemes_are_declared(app: FastAPI) -> None:
    schemes = app.openapi()["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["SessionCookie"] == {"type": "apiKey", "in": "cookie", "name": "access_token"}


def test_the_project_reads_nothing_beside_it() -> None:
    """A clone alone must pass: no test or code path reaches outside the repository."""
    root = API_MD.parents[1]
    offenders = [
        str(path.relative_to(root))
        for folder in ("backend", "tests", "scripts")
        for path in (root / folder).rglob("*.py")
        if re.search(r"""["'/]\.\./shared|parent\s*/\s*["']shared["']""", path.read_text())
    ]
    assert not offenders, offenders


def test_every_schema_reference_resolves(app: FastAPI) -> None:
    schema = app.openapi()
    names = set(schema["components"]["schemas"])
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(schema)))
    assert refs
    assert refs <= names, refs - names


def test_the_listing_documents_its_query_parameters(app: FastAPI) -> None:
    """``GET /api/images`` reads its query through one model (``core.querymodel``) and declares
    the model's fields itself: the schema must still show each, as FastAPI would."""
    parameters = app.openapi()["paths"]["/api/images"]["get"]["parameters"]
    by_name = {parameter["name"]: parameter for parameter in parameters}
    assert set(by_name) == {
        "limit",
        "cursor",
        "status",
        "source",
        "q",
        "created_after",
        "created_before",
    }
    assert all(p["in"] == "query" and p["required"] is False for p in parameters)
    limit = by_name["limit"]["schema"]
    assert (limit["type"], limit["minimum"], limit["maximum"], limit["default"]) == (
        "integer",
        1,
        100,
        20,
    )
    statuses = by_name["status"]["schema"]["anyOf"][0]["enum"]
    assert statuses == ["processing", "ready", "failed"]
    assert by_name["created_after"]["schema"]["anyOf"][0]["format"] == "date-time"
    assert "UTC" in by_name["created_after"]["description"]
