"""Who is calling: ``CurrentUser`` and ``AdminUser`` resolve an API key or the session cookie.

An ``X-API-Key`` header wins when present (server clients, no CSRF); otherwise the
``access_token`` cookie is used and unsafe methods must pass the CSRF check.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, APIKeyHeader

from backend.auth import service
from backend.auth.csrf import verify_csrf
from backend.auth.models import Role, User
from backend.auth.tokens import InvalidToken, decode_access_token
from backend.core.db import SessionDep
from backend.core.errors import Forbidden, Unauthorized
from backend.core.resources import SettingsDep

ACCESS_COOKIE = "access_token"
REFRESH_COOKIE = "refresh_token"

# Declared as security schemes so /docs shows both ways in; auto_error off because absence of
# one is normal and the answer must be our own problem+json 401.
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey")
access_cookie = APIKeyCookie(name=ACCESS_COOKIE, auto_error=False, scheme_name="SessionCookie")


class ExpiredOrInvalidToken(Unauthorized):
    code = "auth.invalid_token"


async def current_user(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    api_key: Annotated[str | None, Depends(api_key_header)],
    token: Annotated[str | None, Depends(access_cookie)],
) -> User:
    if api_key is not None:
        user = await service.resolve_api_key(session, api_key)
    elif token:
        try:
            claims = decode_access_token(token, secret=settings.secret)
        except InvalidToken as exc:
            raise ExpiredOrInvalidToken("The session token is invalid or expired.") from exc
        user = await service.resolve_access(
            session, user_id=claims.user_id, session_id=claims.session_id
        )
        verify_csrf(request, session_id=claims.session_id, secret=settings.secret)
    else:
        raise Unauthorized("Sign in or send an X-API-Key header.")
    request.state.user_id = user.id
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def admin_user(user: CurrentUser) -> User:
    if user.role != Role.admin:
        raise Forbidden("Administrators only.", code="auth.admin_required")
    return user


AdminUser = Annotated[User, Depends(admin_user)]
