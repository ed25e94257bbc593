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
from backend.auth.sessions import Principal, SessionCache
from backend.auth.tokens import AccessClaims, InvalidToken, decode_access_token
from backend.core.db import SAFE_METHODS, SessionDep, commit
from backend.core.errors import Forbidden, Unauthorized
from backend.core.resources import Component, Resources, ResourcesDep, SettingsDep

ACCESS_COOKIE = "access_token"
REFRESH_COOKIE = "refresh_token"

# Declared as security schemes so /docs shows both ways in; auto_error off because absence of
# one is normal and the answer must be our own problem+json 401.
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey")
access_cookie = APIKeyCookie(name=ACCESS_COOKIE, auto_error=False, scheme_name="SessionCookie")


class ExpiredOrInvalidToken(Unauthorized):
    code = "auth.invalid_token"


# This instance's cache of live sessions, filled by the composition root.
SESSIONS: Component[SessionCache] = Component("auth.sessions")


def session_cache(resources: Resources) -> SessionCache:
    return SESSIONS.of(resources)


async def revocations(resources: ResourcesDep) -> service.Revoked:
    """What services call once a commit ended sessions or changed users."""
    return SESSIONS.of(resources).revoke


Revocations = Annotated[service.Revoked, Depends(revocations)]


def _claims(token: str, secret: str) -> AccessClaims:
    try:
        return decode_access_token(token, secret=secret)
    except InvalidToken as exc:
        raise ExpiredOrInvalidToken("The session token is invalid or expired.") from exc


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
        claims = _claims(token, settings.secret)
        user = await service.resolve_access(
            session, user_id=claims.user_id, session_id=claims.session_id
        )
        verify_csrf(request, session_id=claims.session_id, secret=settings.secret)
    else:
        raise Unauthorized("Sign in or send an X-API-Key header.")
    request.state.user_id = user.id
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def current_principal(
    request: Request,
    api_key: Annotated[str | None, Depends(api_key_header)],
    token: Annotated[str | None, Depends(access_cookie)],
) -> Principal:
    """``current_user`` for endpoints that need only who is calling, not an ORM ``User``: a
    cookie's session is answered from this instance's cache of live sessions when it can be
    (see ``backend.auth.sessions``), else read on a pooled connection, without a session."""
    # Off the app, not as a dependency: FastAPI's work per dependency costs more than this.
    resources: Resources = request.app.state.resources
    settings = resources.settings
    if api_key is not None:
        db = resources.db
        maker = db.read_sessionmaker if request.method in SAFE_METHODS else db.sessionmaker
        async with maker() as session:
            user = await service.resolve_api_key(session, api_key)
            principal = service.principal_of(user)
            await commit(session)  # the key's last_used_at
    elif token:
        claims = _claims(token, settings.secret)
        cache = SESSIONS.of(resources)
        found = cache.get(claims.session_id, claims.user_id)
        if found is None:
            generation = cache.generation
            async with resources.db.reader() as conn:
                found = await service.resolve_principal(
                    conn, user_id=claims.user_id, session_id=claims.session_id
                )
            cache.put(claims.session_id, found, generation=generation)
        principal = found
        verify_csrf(request, session_id=claims.session_id, secret=settings.secret)
    else:
        raise Unauthorized("Sign in or send an X-API-Key header.")
    request.state.user_id = principal.id
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def admin_user(user: CurrentUser) -> User:
    if user.role != Role.admin:
        raise Forbidden("Administrators only.", code="auth.admin_required")
    return user


AdminUser = Annotated[User, Depends(admin_user)]
