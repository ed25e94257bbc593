from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Cookie, Query, Request, Response, status

from backend.auth import service
from backend.auth.csrf import CSRF_COOKIE, verify_csrf
from backend.auth.deps import (
    ACCESS_COOKIE,
    REFRESH_COOKIE,
    AdminUser,
    CurrentPrincipal,
    CurrentUser,
    Revocations,
)
from backend.auth.models import User
from backend.auth.schemas import (
    AdminUserOut,
    AdminUserPatch,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    LoginIn,
    RegisterIn,
    UserOut,
)
from backend.auth.sessions import Principal
from backend.auth.tokens import (
    InvalidToken,
    create_access_token,
    csrf_token_for,
    decode_access_token,
)
from backend.config import Settings
from backend.core.db import SessionDep
from backend.core.errors import problem_responses
from backend.core.pagination import Page, PageDep
from backend.core.resources import RedisDep, SettingsDep

REFRESH_PATH = "/api/auth"

router = APIRouter(prefix="/api/auth", tags=["auth"])
admin_router = APIRouter(prefix="/api/admin", tags=["admin"], responses=problem_responses(401, 403))


def _set_session_cookies(
    response: Response,
    settings: Settings,
    *,
    user: User,
    session_id: uuid.UUID,
    refresh_token: str,
) -> None:
    access = create_access_token(
        secret=settings.secret,
        user_id=user.id,
        session_id=session_id,
        ttl_seconds=settings.access_token_ttl_seconds,
    )
    secure = settings.cookie_secure
    response.set_cookie(
        ACCESS_COOKIE,
        access,
        max_age=settings.access_token_ttl_seconds,
        httponly=True,
        secure=secure,
        samesite="lax",
        path="/",
    )
    # Strict and scoped to /api/auth: the refresh token only ever travels to refresh and logout.
    response.set_cookie(
        REFRESH_COOKIE,
        refresh_token,
        max_age=settings.refresh_token_ttl_seconds,
        httponly=True,
        secure=secure,
        samesite="strict",
        path=REFRESH_PATH,
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf_token_for(session_id, secret=settings.secret),
        max_age=settings.refresh_token_ttl_seconds,
        httponly=False,
        secure=secure,
        samesite="lax",
        path="/",
    )


def _clear_session_cookies(response: Response, settings: Settings) -> None:
    secure = settings.cookie_secure
    response.delete_cookie(ACCESS_COOKIE, path="/", secure=secure, httponly=True, samesite="lax")
    response.delete_cookie(
        REFRESH_COOKIE, path=REFRESH_PATH, secure=secure, httponly=True, samesite="strict"
    )
    response.delete_cookie(CSRF_COOKIE, path="/", secure=secure, samesite="lax")


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=problem_responses(409, 422),
)
async def register(
    body: RegisterIn,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
) -> User:
    user = await service.create_user(
        session, email=body.email, password=body.password, display_name=body.display_name
    )
    issued = await service.start_session(
        session, settings, user=user, user_agent=request.headers.get("user-agent")
    )
    _set_session_cookies(
        response,
        settings,
        user=user,
        session_id=issued.auth_session.id,
        refresh_token=issued.refresh_token,
    )
    return user


@router.post("/login", response_model=UserOut, responses=problem_responses(401, 403, 422, 429))
async def login(
    body: LoginIn,
    request: Request,
    response: Response,
    session: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
) -> User:
    user = await service.authenticate(
        session,
        redis,
        settings,
        email=body.email,
        password=body.password,
        ip=request.client.host if request.client else None,
    )
    issued = await service.start_session(
        session, settings, user=user, user_agent=request.headers.get("user-agent")
    )
    _set_session_cookies(
        response,
        settings,
        user=user,
        session_id=issued.auth_session.id,
        refresh_token=issued.refresh_token,
    )
    return user


@router.post("/refresh", response_model=UserOut, responses=problem_responses(401, 403))
async def refresh(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    notify: Revocations,
    refresh_token: Annotated[str | None, Cookie(alias=REFRESH_COOKIE)] = None,
) -> User:
    row = await service.find_refresh(session, refresh_token)
    verify_csrf(request, session_id=row.session_id, secret=settings.secret)
    user, issued = await service.rotate_refresh(session, settings, row=row, notify=notify)
    _set_session_cookies(
        response,
        settings,
        user=user,
        session_id=issued.auth_session.id,
        refresh_token=issued.refresh_token,
    )
    return user


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(403))
async def logout(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    notify: Revocations,
    refresh_token: Annotated[str | None, Cookie(alias=REFRESH_COOKIE)] = None,
    access_token: Annotated[str | None, Cookie(alias=ACCESS_COOKIE)] = None,
) -> Response:
    """End the sign-in session: its refresh family and access tokens stop working at once.

    Idempotent: without a live session there is nothing to revoke and the cookies are cleared.
    """
    session_id: uuid.UUID | None = None
    if refresh_token:
        try:
            session_id = (await service.find_refresh(session, refresh_token)).session_id
        except service.InvalidRefresh:
            session_id = None
    if session_id is None and access_token:
        try:
            session_id = decode_access_token(access_token, secret=settings.secret).session_id
        except InvalidToken:
            session_id = None
    if session_id is not None:
        verify_csrf(request, session_id=session_id, secret=settings.secret)
        await service.revoke_session(session, session_id, reason="logout", notify=notify)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    _clear_session_cookies(response, settings)
    return response


@router.get("/me", response_model=UserOut, responses=problem_responses(401))
async def me(user: CurrentPrincipal) -> Principal:
    return user


@router.post(
    "/api-keys",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    responses=problem_responses(401, 403, 422),
)
async def create_api_key(
    body: ApiKeyCreate, user: CurrentUser, session: SessionDep
) -> ApiKeyCreated:
    api_key, plain = await service.create_api_key(session, user=user, name=body.name)
    return ApiKeyCreated(
        id=api_key.id,
        name=api_key.name,
        prefix=api_key.prefix,
        created_at=api_key.created_at,
        last_used_at=api_key.last_used_at,
        key=plain,
    )


@router.get("/api-keys", response_model=Page[ApiKeyOut], responses=problem_responses(401, 422))
async def list_api_keys(user: CurrentUser, session: SessionDep, page: PageDep) -> Page[ApiKeyOut]:
    items, cursor = await service.list_api_keys(session, user=user, page=page)
    return Page(items=[ApiKeyOut.model_validate(k) for k in items], next_cursor=cursor)


@router.delete(
    "/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, 404),
)
async def delete_api_key(key_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> None:
    await service.delete_api_key(session, user=user, key_id=key_id)


@admin_router.get("/users", response_model=Page[AdminUserOut], responses=problem_responses(422))
async def admin_list_users(
    _admin: AdminUser,
    session: SessionDep,
    page: PageDep,
    q: Annotated[
        str | None,
        Query(max_length=100, description="Part of an email or display name, any case"),
    ] = None,
) -> Page[AdminUserOut]:
    items, cursor = await service.list_users(session, page=page, search=(q or "").strip() or None)
    return Page(items=[AdminUserOut.model_validate(u) for u in items], next_cursor=cursor)


@admin_router.patch(
    "/users/{user_id}", response_model=AdminUserOut, responses=problem_responses(404, 409, 422)
)
async def admin_update_user(
    user_id: uuid.UUID,
    body: AdminUserPatch,
    admin: AdminUser,
    session: SessionDep,
    notify: Revocations,
) -> User:
    return await service.update_user(
        session,
        actor=admin,
        user_id=user_id,
        role=body.role,
        disabled=body.disabled,
        notify=notify,
    )
