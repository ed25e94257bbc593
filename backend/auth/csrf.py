"""CSRF double-submit: unsafe cookie-authenticated requests echo the ``csrf_token`` cookie in
``X-CSRF-Token``, and that value must also be the one derived from the sign-in session."""

from __future__ import annotations

import hmac
import uuid

from fastapi import Request

from backend.auth.tokens import csrf_token_for
from backend.core.errors import Forbidden

CSRF_COOKIE = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class CsrfFailed(Forbidden):
    code = "auth.csrf"


def verify_csrf(request: Request, *, session_id: uuid.UUID, secret: str) -> None:
    if request.method in SAFE_METHODS:
        return
    header = request.headers.get(CSRF_HEADER, "")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    expected = csrf_token_for(session_id, secret=secret)
    if (
        not header
        or not hmac.compare_digest(header, cookie)
        or not hmac.compare_digest(header, expected)
    ):
        raise CsrfFailed(f"Missing or wrong {CSRF_HEADER} header.")
