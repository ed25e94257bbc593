"""The Lambda handler, driven with the events API Gateway HTTP API and Function URLs send.

Both use payload format 2.0: cookies arrive in a top-level ``cookies`` array and leave in the
response's ``cookies`` list. Every call runs in a fresh thread, as an invocation has no event
loop of its own here and the handler must keep using one loop across invocations anyway.
"""

from __future__ import annotations

import base64
import importlib
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import pytest

from backend.core.migrations import upgrade

SECRET = "lambda-test-secret-" + "k" * 40
PASSWORD = "correct horse battery"
API_ID = "a1b2c3d4e5"
URL_ID = "abcdefghijklmnopqrstuvwxyz012345"

Event = dict[str, Any]


def _request_context(method: str, path: str, domain: str, api_id: str) -> dict[str, Any]:
    now = time.time()
    return {
        "accountId": "123456789012",
        "apiId": api_id,
        "domainName": domain,
        "domainPrefix": domain.split(".", 1)[0],
        "http": {
            "method": method,
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": "203.0.113.7",
            "userAgent": "pytest-lambda",
        },
        "requestId": str(uuid.uuid4()),
        "routeKey": "$default",
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }


def _event(
    method: str,
    path: str,
    *,
    domain: str,
    api_id: str,
    body: object = None,
    cookies: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> Event:
    all_headers = {
        "accept": "*/*",
        "host": domain,
        "user-agent": "pytest-lambda",
        "x-forwarded-for": "203.0.113.7",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    event: Event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": all_headers | (headers or {}),
        "requestContext": _request_context(method, path, domain, api_id),
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if body is not None:
        event["body"] = json.dumps(body)
        event["headers"]["content-type"] = "application/json"
    return event


def http_api_event(method: str, path: str, **kwargs: Any) -> Event:
    """API Gateway HTTP API, payload format 2.0, default stage."""
    domain = f"{API_ID}.execute-api.eu-west-1.amazonaws.com"
    return _event(method, path, domain=domain, api_id=API_ID, **kwargs)


def function_url_event(method: str, path: str, **kwargs: Any) -> Event:
    """A Lambda Function URL: the same 2.0 shape, its own domain, IAM or no authoriser."""
    domain = f"{URL_ID}.lambda-url.eu-west-1.on.aws"
    event = _event(method, path, domain=domain, api_id=URL_ID, **kwargs)
    event["requestContext"]["accountId"] = "anonymous"
    event["pathParameters"] = None
    event["queryStringParameters"] = None
    event["stageVariables"] = None
    return event


def http_api_stage_event(stage: str, method: str, path: str, **kwargs: Any) -> Event:
    """An HTTP API on a named stage: the stage leads ``rawPath`` and ``http.path``."""
    event = http_api_event(method, f"/{stage}{path}", **kwargs)
    event["requestContext"]["stage"] = stage
    return event


def rest_api_event(
    method: str,
    path: str,
    *,
    stage: str = "prod",
    body: object = None,
    cookies: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> Event:
    """API Gateway REST API (v1), Lambda proxy integration on ``/{proxy+}``, payload 1.0.

    ``path`` is the resource path without the stage; the stage is in ``requestContext`` (and
    in ``requestContext.path``). Headers come twice: single- and multi-value.
    """
    domain = f"{API_ID}.execute-api.eu-west-1.amazonaws.com"
    single = {
        "Accept": "*/*",
        "Host": domain,
        "User-Agent": "pytest-lambda",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    } | (headers or {})
    if cookies:
        single["Cookie"] = "; ".join(cookies)
    if body is not None:
        single["Content-Type"] = "application/json"
    now = time.time()
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": single,
        "multiValueHeaders": {name: [value] for name, value in single.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "extendedRequestId": "c3RhZ2U=",
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": f"/{stage}{path}",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": API_ID,
            "requestTimeEpoch": int(now * 1000),
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "pytest-lambda"},
            "domainName": domain,
            "apiId": API_ID,
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


class Context:
    """The attributes of the Lambda context object that adapters read."""

    function_name = "atelier-api"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:atelier-api"
    memory_limit_in_mb = 1024
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    log_group_name = "/aws/lambda/atelier-api"
    log_stream_name = "2026/11/21/[$LATEST]abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


Invoke = Callable[[Event], dict[str, Any]]


@pytest.fixture(scope="module")
def lambda_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    root = tmp_path_factory.mktemp("lambda")
    database_url = f"sqlite+aiosqlite:///{root / 'atelier.db'}"
    env = {
        "ATELIER_ENV": "test",
        "ATELIER_SECRET_KEY": SECRET,
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{root / 'storage'}",
        # Empty means embedded (fakeredis), whatever the developer's shell says.
        "REDIS_URL": "",
        "ATELIER_PUBLIC_BASE_URL": f"https://{API_ID}.execute-api.eu-west-1.amazonaws.com",
        "ATELIER_LOG_JSON": "false",
        "ATELIER_LOG_LEVEL": "WARNING",
    }
    # Alembic's env.py runs its own event loop; a thread keeps it clear of pytest-asyncio's.
    migration = threading.Thread(target=upgrade, args=(database_url,))
    migration.start()
    migration.join()

    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        sys.modules.pop("backend.lambda_handler", None)
        module = importlib.import_module("backend.lambda_handler")
        try:
            yield module
        finally:
            sys.modules.pop("backend.lambda_handler", None)


@pytest.fixture(scope="module")
def invoke(lambda_module: ModuleType) -> Iterator[Invoke]:
    # A new thread per call: the Lambda runtime gives no guarantees about the caller's loop.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lambda") as pool:

        def call(event: Event) -> dict[str, Any]:
            result: dict[str, Any] = pool.submit(lambda_module.handler, event, Context()).result()
            return result

        yield call


def _cookie_pairs(response: dict[str, Any]) -> dict[str, str]:
    """``name=value`` of each Set-Cookie in a 2.0 response's ``cookies`` list."""
    pairs = {}
    for cookie in response.get("cookies", []):
        name, _, rest = cookie.partition("=")
        pairs[name] = rest.split(";", 1)[0]
    return pairs


def _json(response: dict[str, Any]) -> Any:
    assert response["isBase64Encoded"] is False
    return json.loads(response["body"])


def _register(invoke: Invoke, email: str) -> dict[str, Any]:
    body = {"email": email, "password": PASSWORD, "display_name": "Lambda"}
    return invoke(http_api_event("POST", "/api/auth/register", body=body))


def test_handler_is_mangum_without_lifespan(lambda_module: ModuleType) -> None:
    assert lambda_module.adapter.lifespan == "off"
    assert callable(lambda_module.handler)


def test_register_sets_session_cookies_in_v2_cookies_list(invoke: Invoke) -> None:
    response = _register(invoke, "register@example.com")

    assert response["statusCode"] == 201, response
    cookies = _cookie_pairs(response)
    assert {"access_token", "refresh_token", "csrf_token"} <= cookies.keys()
    assert all(cookies[name] for name in ("access_token", "refresh_token", "csrf_token"))
    # 2.0 responses carry cookies only in the list; a set-cookie header would be dropped.
    assert "set-cookie" not in {k.lower() for k in response.get("headers", {})}
    session = [c for c in response["cookies"] if c.startswith(("access_token=", "refresh_token="))]
    assert all("Secure" in c and "HttpOnly" in c for c in session)
    assert _json(response)["email"] == "register@example.com"


@pytest.mark.parametrize("make_event", [http_api_event, function_url_event])
def test_login_then_authenticated_request_with_event_cookies(
    invoke: Invoke, make_event: Callable[..., Event]
) -> None:
    email = f"login-{make_event.__name__}@example.com"
    assert _register(invoke, email)["statusCode"] == 201

    login = invoke(
        make_event("POST", "/api/auth/login", body={"email": email, "password": PASSWORD})
    )
    assert login["statusCode"] == 200, login
    cookies = _cookie_pairs(login)
    assert {"access_token", "refresh_token", "csrf_token"} <= cookies.keys()

    # The next request sends them back the way API Gateway does: the event's cookies array.
    sent = [f"{name}={value}" for name, value in cookies.items()]
    me = invoke(make_event("GET", "/api/auth/me", cookies=sent))
    assert me["statusCode"] == 200, me
    assert _json(me)["email"] == email

    # Warm invocations reuse the clients made by the first ones; they must still work.
    again = invoke(make_event("GET", "/api/auth/me", cookies=sent))
    assert again["statusCode"] == 200, again


def test_without_cookies_the_problem_comes_back_as_text(invoke: Invoke) -> None:
    response = invoke(function_url_event("GET", "/api/auth/me"))

    assert response["statusCode"] == 401
    assert response["headers"]["content-type"].startswith("application/problem+json")
    assert _json(response)["status"] == 401


def test_binary_response_is_base64(invoke: Invoke) -> None:
    response = invoke(http_api_event("GET", "/api/sketch/styles/pencil/preview"))

    assert response["statusCode"] == 200, response
    assert response["headers"]["content-type"] == "image/png"
    assert response["isBase64Encoded"] is True
    assert base64.b64decode(response["body"]).startswith(b"\x89PNG\r\n\x1a\n")


def test_consecutive_invocations_from_different_threads(lambda_module: ModuleType) -> None:
    # Each call from its own thread, each thread gone before the next: the pooled database
    # connections and fakeredis made on the first call must survive on the handler's loop.
    results: list[int] = []
    for index in range(3):
        event = http_api_event("GET", "/health")
        worker = threading.Thread(
            target=lambda e=event: results.append(
                lambda_module.handler(e, Context())["statusCode"]
            ),
            name=f"invocation-{index}",
        )
        worker.start()
        worker.join()
    assert results == [200, 200, 200]


def test_health_reports_every_dependency(invoke: Invoke) -> None:
    body = _json(invoke(function_url_event("GET", "/health")))
    assert body["status"] == "ok"
    assert set(body["checks"].values()) == {"ok"}


def test_events_are_real_shaped() -> None:
    # Guard against the helpers drifting from what AWS sends (fields adapters key on).
    for event in (http_api_event("GET", "/x"), function_url_event("GET", "/x")):
        assert event["version"] == "2.0"
        assert event["routeKey"] == "$default"
        assert event["requestContext"]["http"]["method"] == "GET"
        assert event["rawPath"] == event["requestContext"]["http"]["path"] == "/x"
    assert function_url_event("GET", "/")["requestContext"]["domainName"].endswith(".on.aws")


def test_named_stage_on_an_http_api(invoke: Invoke) -> None:
    assert invoke(http_api_stage_event("prod", "GET", "/healthz"))["statusCode"] == 200
    # Routed (401 problem), not a 404: the stage is not part of the app's paths.
    me = invoke(http_api_stage_event("prod", "GET", "/api/auth/me"))
    assert me["statusCode"] == 401
    assert _json(me)["code"] == "auth.unauthenticated"
    # The docs page points at the schema under the stage, where a browser can fetch it.
    docs = invoke(http_api_stage_event("prod", "GET", "/docs"))
    assert docs["statusCode"] == 200
    assert "/prod/openapi.json" in docs["body"]


def test_rest_api_with_stage_register_login_me(invoke: Invoke) -> None:
    assert invoke(rest_api_event("GET", "/healthz"))["statusCode"] == 200
    email = "rest-v1@example.com"
    body = {"email": email, "password": PASSWORD}
    registered = invoke(rest_api_event("POST", "/api/auth/register", body=body))
    assert registered["statusCode"] == 201, registered
    # Payload 1.0 returns several Set-Cookie headers through multiValueHeaders.
    set_cookies = registered["multiValueHeaders"]["set-cookie"]
    pairs = dict(c.split(";", 1)[0].split("=", 1) for c in set_cookies)
    assert {"access_token", "refresh_token", "csrf_token"} <= pairs.keys()
    sent = [f"{k}={v}" for k, v in pairs.items()]
    me = invoke(rest_api_event("GET", "/api/auth/me", cookies=sent))
    assert me["statusCode"] == 200, me
    assert _json(me)["email"] == email


def test_rest_api_binary_answer_is_base64(invoke: Invoke) -> None:
    # API Gateway turns it back into bytes only if binaryMediaTypes matches (see infra/README).
    response = invoke(
        rest_api_event("GET", "/api/sketch/styles/pencil/preview", headers={"Accept": "image/*"})
    )
    assert response["statusCode"] == 200, response
    assert response["isBase64Encoded"] is True
    assert base64.b64decode(response["body"]).startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize(
    "event",
    [
        http_api_event("GET", "/ws"),
        http_api_stage_event("prod", "GET", "/ws"),
        rest_api_event("GET", "/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade"}),
        function_url_event("GET", "/ws"),
    ],
    ids=["http-api", "http-api-stage", "rest-api", "function-url"],
)
def test_websocket_on_lambda_names_the_alternative(invoke: Invoke, event: Event) -> None:
    response = invoke(event)
    assert response["statusCode"] == 501
    problem = _json(response)
    assert problem["code"] == "realtime.unsupported_on_lambda"
    assert "Cloud Run" in problem["detail"]
    assert response["headers"]["content-type"].startswith("application/problem+json")


def test_unknown_paths_under_a_stage_are_still_404(invoke: Invoke) -> None:
    response = invoke(http_api_stage_event("prod", "GET", "/no/such/thing"))
    assert response["statusCode"] == 404
    assert _json(response)["code"] == "http.not_found"
