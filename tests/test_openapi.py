"""/openapi.json matches the binding contract in ../shared/API.md for the areas built so far."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from backend.core.migrations import ROOT

API_MD = ROOT.parent / "shared" / "API.md"
# Grows as features land; every contract line under these prefixes must exist.
IMPLEMENTED = (
    "/api/batches",
    "/api/sketch",
    "/api/ai",
    "/api/cache",
    "/api/upload",
    "/api/images",
    "/api/stats",
    "/api/tasks",
    "/ws",
    "/api/auth",
    "/api/admin/users",
    "/health",
    "/healthz",
    "/metrics",
    "/docs",
    "/redoc",
)
ENDPOINT = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE)\b[\s|`]*(/[\w/{}.\-]*)")


def _normal(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path.rstrip("/") or "/")


def contract_endpoints() -> set[tuple[str, str]]:
    if not API_MD.exists():
        pytest.fail(f"the contract {API_MD} is missing beside the project")
    found = set()
    for method, path in ENDPOINT.findall(API_MD.read_text()):
        if any(path == p or path.startswith(p + "/") for p in IMPLEMENTED):
            found.add((method, _normal(path)))
    return found


def _websocket_route_exists(app: FastAPI, path: str) -> bool:
    """WebSockets are not in OpenAPI: knock anonymously. Our route refuses with 1008 (policy);
    Starlette closes an unknown WebSocket path with 1000."""
    with TestClient(app) as client:
        try:
            with client.websocket_connect(path):
                return True
        except WebSocketDisconnect as exc:
            return exc.code == 1008


def served_endpoints(app: FastAPI) -> set[tuple[str, str]]:
    served = {("GET", "/docs"), ("GET", "/redoc")}
    if _websocket_route_exists(app, "/ws"):
        served.add(("GET", "/ws"))
    for path, item in app.openapi()["paths"].items():
        served.update((method.upper(), _normal(path)) for method in item)
    return served


def test_contract_endpoints_are_served(app: FastAPI) -> None:
    expected = contract_endpoints()
    assert ("POST", "/api/auth/login") in expected
    assert ("PATCH", "/api/admin/users/{}") in expected
    assert ("POST", "/api/tasks/{}/cancel") in expected
    assert ("GET", "/ws") in expected
    assert ("GET", "/api/images/{}/thumbnails/{}") in expected
    assert ("GET", "/api/sketch/styles/available") in expected
    assert ("POST", "/api/ai/edit") in expected
    assert ("GET", "/api/batches/{}/output.csv") in expected
    missing = expected - served_endpoints(app)
    assert not missing, f"in API.md but not in /openapi.json: {sorted(missing)}"


def test_error_answers_are_documented_as_problem_json(app: FastAPI) -> None:
    schema = app.openapi()
    assert "Problem" in schema["components"]["schemas"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
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
