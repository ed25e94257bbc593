"""Auth over HTTP on Postgres and Redis: cookies, CSRF, refresh rotation, API keys, admin."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie

import httpx
import jwt
import pytest
from fastapi import FastAPI

from backend.auth.tokens import create_access_token
from tests.conftest import PASSWORD, TEST_SECRET, SignedIn, SignUp, client_for, unique_email

PROBLEM = "application/problem+json"


def assert_problem(answer: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM)
    body: dict[str, object] = answer.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str)
    return body


def protected_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Operations that declare a security requirement (the CurrentUser dependency adds one)."""
    found = []
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            if operation.get("security"):
                concrete = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
                found.append((method.upper(), concrete))
    return found


# Anonymous first: every endpoint that needs a user must answer 401 without one. The list is
# read from the app itself so a new endpoint cannot forget its guard unnoticed.
async def test_every_protected_endpoint_refuses_anonymous(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    routes = protected_routes(app)
    assert ("GET", "/api/auth/me") in [(m, p) for m, p in routes]
    assert len(routes) >= 6
    for method, path in routes:
        answer = await client.request(method, path, json={})
        assert_problem(answer, 401, "auth.unauthenticated")
        assert "WWW-Authenticate" in answer.headers


async def test_register_sets_hardened_cookies(client: httpx.AsyncClient) -> None:
    email = unique_email()
    answer = await client.post(
        "/api/auth/register",
        json={"email": email.upper(), "password": PASSWORD, "display_name": "  Ada  "},
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["email"] == email
    assert body["display_name"] == "Ada"
    assert body["role"] == "user"
    assert set(body) == {"id", "email", "display_name", "role", "created_at"}
    assert body["created_at"].endswith("Z")

    cookies = {}
    for header in answer.headers.get_list("set-cookie"):
        jar = SimpleCookie()
        jar.load(header)
        for name, morsel in jar.items():
            cookies[name] = (morsel, header.lower())
    assert set(cookies) == {"access_token", "refresh_token", "csrf_token"}
    for name, (_, raw) in cookies.items():
        assert "secure" in raw, name
        assert ("httponly" in raw) is (name != "csrf_token"), name
    assert "samesite=lax" in cookies["access_token"][1]
    assert cookies["refresh_token"][0]["path"] == "/api/auth"
    assert cookies["access_token"][0]["path"] == "/"

    me = await client.get("/api/auth/me")
    assert me.status_code == 200
    assert me.json()["id"] == body["id"]


async def test_duplicate_email_is_409_case_insensitive(
    client: httpx.AsyncClient, alice: SignedIn
) -> None:
    answer = await client.post(
        "/api/auth/register", json={"email": alice.email.upper(), "password": PASSWORD}
    )
    assert_problem(answer, 409, "auth.email_taken")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"email": "x@example.com", "password": "short"}, "auth.weak_password"),
        (
            {"email": "longenough@example.com", "password": "LongEnough@example.com"},
            "auth.weak_password",
        ),
        ({"email": "x@example.com"}, "request.validation"),
        ({"password": PASSWORD}, "request.validation"),
        ({"email": "not-an-email", "password": PASSWORD}, "request.validation"),
        ({"email": 123, "password": PASSWORD}, "request.validation"),
        ({"email": "x@example.com", "password": ["a", "list"]}, "request.validation"),
        ({"email": "x@example.com", "password": "p" * 5000}, "request.validation"),
        ({"email": "x@example.com", "password": PASSWORD, "role": "admin"}, "request.validation"),
        ([1, 2, 3], "request.validation"),
    ],
)
async def test_register_bad_input(client: httpx.AsyncClient, payload: object, code: str) -> None:
    answer = await client.post("/api/auth/register", json=payload)
    body = assert_problem(answer, 422, code)
    if code == "request.validation":
        errors = body["errors"]
        assert isinstance(errors, list)
        assert errors
        # The offending input (a password, perhaps) is never echoed back.
        assert all("input" not in err for err in errors)


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/api/auth/login", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    assert_problem(answer, 422, "request.malformed_json")


async def test_unknown_email_and_wrong_password_answer_alike(
    client: httpx.AsyncClient, alice: SignedIn
) -> None:
    wrong = await client.post(
        "/api/auth/login", json={"email": alice.email, "password": "nope-nope-nope"}
    )
    unknown = await client.post(
        "/api/auth/login", json={"email": unique_email("ghost"), "password": "nope-nope-nope"}
    )
    malformed = await client.post(
        "/api/auth/login", json={"email": "not an email", "password": "x"}
    )
    bodies = [
        assert_problem(a, 401, "auth.invalid_credentials") for a in (wrong, unknown, malformed)
    ]
    assert bodies[0] == bodies[1] == bodies[2]
    assert "set-cookie" not in wrong.headers


async def test_login_sets_a_new_session(client: httpx.AsyncClient, alice: SignedIn) -> None:
    answer = await client.post("/api/auth/login", json={"email": alice.email, "password": PASSWORD})
    assert answer.status_code == 200
    assert answer.json()["id"] == alice.id
    assert client.cookies.get("csrf_token") != alice.client.cookies.get("csrf_token")
    assert (await client.get("/api/auth/me")).json()["email"] == alice.email


async def test_login_failures_are_rate_limited_per_email(app: FastAPI, alice: SignedIn) -> None:
    async with client_for(app) as c:
        for _ in range(5):
            answer = await c.post(
                "/api/auth/login", json={"email": alice.email, "password": "wrong-password"}
            )
            assert answer.status_code == 401
        blocked = await c.post("/api/auth/login", json={"email": alice.email, "password": PASSWORD})
        body = assert_problem(blocked, 429, "auth.rate_limited")
        retry_after = int(blocked.headers["Retry-After"])
        assert 0 < retry_after <= 900
        assert body["retry_after"] == retry_after
        # Another account from the same address is not locked out by alice's counter.
        other = await c.post(
            "/api/auth/login", json={"email": unique_email(), "password": "wrong-password"}
        )
        assert other.status_code == 401


async def test_login_failures_are_rate_limited_per_ip(make_app: object, alice: SignedIn) -> None:
    app = make_app(login_max_failures_per_ip=3, login_max_failures_per_email=100)  # type: ignore[operator]
    async with client_for(app) as c:
        for _ in range(3):
            await c.post(
                "/api/auth/login", json={"email": unique_email(), "password": "wrong-password"}
            )
        blocked = await c.post("/api/auth/login", json={"email": alice.email, "password": PASSWORD})
        assert_problem(blocked, 429, "auth.rate_limited")
        assert "Retry-After" in blocked.headers


async def test_successful_login_resets_the_email_counter(app: FastAPI, alice: SignedIn) -> None:
    async with client_for(app) as c:
        for _ in range(4):
            await c.post(
                "/api/auth/login", json={"email": alice.email, "password": "wrong-password"}
            )
        assert (
            await c.post("/api/auth/login", json={"email": alice.email, "password": PASSWORD})
        ).status_code == 200
        for _ in range(4):
            answer = await c.post(
                "/api/auth/login", json={"email": alice.email, "password": "wrong-password"}
            )
            assert answer.status_code == 401


def _forge(claims: dict[str, object], *, key: str = TEST_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def test_bad_access_tokens_are_refused(app: FastAPI, alice: SignedIn) -> None:
    real = alice.client.cookies["access_token"]
    claims = jwt.decode(real, options={"verify_signature": False})
    now = datetime.now(UTC)
    expired = create_access_token(
        secret=TEST_SECRET,
        user_id=uuid.UUID(alice.id),
        session_id=uuid.UUID(claims["sid"]),
        ttl_seconds=-60,
    )
    head, payload, signature = real.split(".")
    tampered_payload = _b64({**claims, "sub": str(uuid.uuid4())})
    flipped = signature[:-2] + ("AA" if not signature.endswith("AA") else "BB")
    tokens = {
        "expired": expired,
        "tampered payload": f"{head}.{tampered_payload}.{signature}",
        "tampered signature": f"{head}.{payload}.{flipped}",
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "wrong algorithm": _forge(claims, algorithm="HS384"),
        "other secret": _forge(claims, key="another-secret-" + "y" * 40),
        "no exp": _forge({k: v for k, v in claims.items() if k != "exp"}),
        "no sub": _forge({k: v for k, v in claims.items() if k != "sub"}),
        "no sid": _forge({k: v for k, v in claims.items() if k != "sid"}),
        "future iat only": _forge(
            {**claims, "exp": int((now + timedelta(hours=1)).timestamp()), "typ": "refresh"}
        ),
        "garbage": "not.a.jwt",
    }
    for name, token in tokens.items():
        async with client_for(app, cookies={"access_token": token}) as c:
            answer = await c.get("/api/auth/me")
            assert answer.status_code == 401, name
            assert_problem(answer, 401, "auth.invalid_token")


async def test_csrf_is_required_for_unsafe_cookie_requests(
    app: FastAPI, alice: SignedIn, bob: SignedIn
) -> None:
    c = alice.client
    missing = await c.post("/api/auth/api-keys", json={"name": "ci"})
    assert_problem(missing, 403, "auth.csrf")
    wrong = await c.post(
        "/api/auth/api-keys", json={"name": "ci"}, headers={"X-CSRF-Token": "0" * 64}
    )
    assert_problem(wrong, 403, "auth.csrf")
    # A token valid for another session, planted in both cookie and header, is still refused.
    planted = bob.client.cookies["csrf_token"]
    async with with_cookies(
        app, access_token=c.cookies["access_token"], csrf_token=planted
    ) as forged:
        mismatched = await forged.post(
            "/api/auth/api-keys", json={"name": "ci"}, headers={"X-CSRF-Token": planted}
        )
        assert_problem(mismatched, 403, "auth.csrf")
    # Safe methods need no header.
    assert (await c.get("/api/auth/api-keys")).status_code == 200


def with_cookies(app: FastAPI, **cookies: str) -> httpx.AsyncClient:
    """A client that sends exactly these cookies, bypassing the jar's domain/path matching."""
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    return client_for(app, headers={"Cookie": header})


async def test_refresh_rotates_and_reuse_revokes_the_family(app: FastAPI, alice: SignedIn) -> None:
    c = alice.client
    first = dict(c.cookies.items())
    assert_problem(await c.post("/api/auth/refresh"), 403, "auth.csrf")

    rotated = await c.post("/api/auth/refresh", headers=alice.csrf)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["id"] == alice.id
    second = dict(c.cookies.items())
    assert second["refresh_token"] != first["refresh_token"]
    assert (await c.get("/api/auth/me")).status_code == 200

    # Replaying the first (already rotated) token is theft: the whole family dies.
    async with with_cookies(app, **first) as thief:
        reused = await thief.post(
            "/api/auth/refresh", headers={"X-CSRF-Token": first["csrf_token"]}
        )
        assert_problem(reused, 401, "auth.refresh_reused")
    async with with_cookies(app, **second) as owner:
        after = await owner.post(
            "/api/auth/refresh", headers={"X-CSRF-Token": second["csrf_token"]}
        )
        assert_problem(after, 401, "auth.session_revoked")
        assert_problem(await owner.get("/api/auth/me"), 401, "auth.session_revoked")


async def test_refresh_without_or_with_unknown_cookie(app: FastAPI) -> None:
    async with client_for(app) as c:
        assert_problem(await c.post("/api/auth/refresh"), 401, "auth.invalid_refresh")
    async with with_cookies(app, refresh_token="made-up") as c:
        assert_problem(await c.post("/api/auth/refresh"), 401, "auth.invalid_refresh")


async def test_logout_revokes_and_old_cookies_stop_working(app: FastAPI, alice: SignedIn) -> None:
    c = alice.client
    old = dict(c.cookies.items())
    assert_problem(await c.post("/api/auth/logout"), 403, "auth.csrf")
    answer = await c.post("/api/auth/logout", headers=alice.csrf)
    assert answer.status_code == 204
    cleared = " ".join(answer.headers.get_list("set-cookie"))
    for name in ("access_token", "refresh_token", "csrf_token"):
        assert f"{name}=" in cleared
    assert_problem(await c.get("/api/auth/me"), 401, "auth.unauthenticated")

    async with with_cookies(app, **old) as replay:
        assert_problem(await replay.get("/api/auth/me"), 401, "auth.session_revoked")
        refreshed = await replay.post(
            "/api/auth/refresh", headers={"X-CSRF-Token": old["csrf_token"]}
        )
        assert_problem(refreshed, 401, "auth.session_revoked")
    # Logging out again without a session is harmless.
    assert (await c.post("/api/auth/logout")).status_code == 204


async def test_api_keys_lifecycle(app: FastAPI, alice: SignedIn) -> None:
    c = alice.client
    created = await c.post(
        "/api/auth/api-keys", json={"name": "  build server "}, headers=alice.csrf
    )
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert body["name"] == "build server"
    assert key.startswith("atk_")
    assert key.startswith(body["prefix"])

    listed = (await c.get("/api/auth/api-keys")).json()
    assert [item["id"] for item in listed["items"]] == [body["id"]]
    assert "key" not in listed["items"][0]
    assert listed["next_cursor"] is None

    async with client_for(app, headers={"X-API-Key": key}) as server:
        me = await server.get("/api/auth/me")
        assert me.json()["id"] == alice.id
        # API-key callers need no CSRF header for unsafe methods.
        second = await server.post("/api/auth/api-keys", json={"name": "second"})
        assert second.status_code == 201

        deleted = await c.delete(f"/api/auth/api-keys/{body['id']}", headers=alice.csrf)
        assert deleted.status_code == 204
        assert_problem(await server.get("/api/auth/me"), 401, "auth.invalid_api_key")
    assert_problem(
        await c.delete(f"/api/auth/api-keys/{body['id']}", headers=alice.csrf),
        404,
        "auth.api_key_not_found",
    )


async def test_api_keys_of_others_are_404_and_bad_keys_401(
    app: FastAPI, alice: SignedIn, bob: SignedIn
) -> None:
    created = await alice.client.post(
        "/api/auth/api-keys", json={"name": "mine"}, headers=alice.csrf
    )
    key_id = created.json()["id"]
    foreign = await bob.client.delete(f"/api/auth/api-keys/{key_id}", headers=bob.csrf)
    missing = await bob.client.delete(f"/api/auth/api-keys/{uuid.uuid4()}", headers=bob.csrf)
    assert assert_problem(foreign, 404, "auth.api_key_not_found") == assert_problem(
        missing, 404, "auth.api_key_not_found"
    )
    assert (await bob.client.get("/api/auth/api-keys")).json()["items"] == []
    assert_problem(
        await bob.client.delete("/api/auth/api-keys/not-a-uuid", headers=bob.csrf),
        422,
        "request.validation",
    )
    for bad in ("atk_nope", "x" * 5000):
        async with client_for(app, headers={"X-API-Key": bad}) as c:
            assert_problem(await c.get("/api/auth/me"), 401, "auth.invalid_api_key")
    assert_problem(
        await alice.client.post("/api/auth/api-keys", json={"name": ""}, headers=alice.csrf),
        422,
        "request.validation",
    )


async def test_api_keys_paginate(alice: SignedIn) -> None:
    for i in range(5):
        await alice.client.post("/api/auth/api-keys", json={"name": f"k{i}"}, headers=alice.csrf)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await alice.client.get("/api/auth/api-keys", params=params)).json()
        seen.extend(item["name"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["k4", "k3", "k2", "k1", "k0"]
    for params in ({"limit": 0}, {"limit": 101}, {"limit": "many"}):
        assert_problem(
            await alice.client.get("/api/auth/api-keys", params=params), 422, "request.validation"
        )
    assert_problem(
        await alice.client.get("/api/auth/api-keys", params={"cursor": "!!garbage"}),
        422,
        "pagination.invalid_cursor",
    )


async def test_admin_endpoints_are_admin_only(alice: SignedIn) -> None:
    assert_problem(await alice.client.get("/api/admin/users"), 403, "auth.admin_required")
    answer = await alice.client.patch(
        f"/api/admin/users/{alice.id}", json={"role": "admin"}, headers=alice.csrf
    )
    assert_problem(answer, 403, "auth.admin_required")


async def test_admin_lists_and_changes_users(
    admin: SignedIn, alice: SignedIn, sign_up: SignUp
) -> None:
    carol = await sign_up("carol")
    page = (await admin.client.get("/api/admin/users", params={"limit": 2})).json()
    assert [u["id"] for u in page["items"]] == [carol.id, alice.id]
    assert page["items"][0]["disabled"] is False
    rest = (
        await admin.client.get("/api/admin/users", params={"cursor": page["next_cursor"]})
    ).json()
    assert admin.id in [u["id"] for u in rest["items"]]

    promoted = await admin.client.patch(
        f"/api/admin/users/{carol.id}", json={"role": "admin"}, headers=admin.csrf
    )
    assert promoted.json()["role"] == "admin"
    assert (await carol.client.get("/api/admin/users")).status_code == 200

    assert_problem(
        await admin.client.patch(
            f"/api/admin/users/{uuid.uuid4()}", json={"disabled": True}, headers=admin.csrf
        ),
        404,
        "admin.user_not_found",
    )
    assert_problem(
        await admin.client.patch(
            f"/api/admin/users/{admin.id}", json={"role": "user"}, headers=admin.csrf
        ),
        409,
        "admin.self_change",
    )
    assert_problem(
        await admin.client.patch(
            f"/api/admin/users/{carol.id}", json={"role": "root"}, headers=admin.csrf
        ),
        422,
        "request.validation",
    )


async def test_disabled_user_is_locked_out_everywhere(
    app: FastAPI, admin: SignedIn, alice: SignedIn
) -> None:
    key = (
        await alice.client.post("/api/auth/api-keys", json={"name": "k"}, headers=alice.csrf)
    ).json()["key"]
    answer = await admin.client.patch(
        f"/api/admin/users/{alice.id}", json={"disabled": True}, headers=admin.csrf
    )
    assert answer.json()["disabled"] is True

    assert_problem(await alice.client.get("/api/auth/me"), 401, "auth.session_revoked")
    async with client_for(app, headers={"X-API-Key": key}) as c:
        assert_problem(await c.get("/api/auth/me"), 403, "auth.user_disabled")
    async with client_for(app) as c:
        login = await c.post("/api/auth/login", json={"email": alice.email, "password": PASSWORD})
        assert_problem(login, 403, "auth.user_disabled")

    await admin.client.patch(
        f"/api/admin/users/{alice.id}", json={"disabled": False}, headers=admin.csrf
    )
    async with client_for(app) as c:
        assert (
            await c.post("/api/auth/login", json={"email": alice.email, "password": PASSWORD})
        ).status_code == 200


async def test_users_are_isolated(alice: SignedIn, bob: SignedIn) -> None:
    await alice.client.post("/api/auth/api-keys", json={"name": "alice-key"}, headers=alice.csrf)
    assert (await bob.client.get("/api/auth/me")).json()["id"] == bob.id
    assert (await bob.client.get("/api/auth/api-keys")).json()["items"] == []
