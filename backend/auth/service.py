"""Accounts, sign-in sessions, refresh rotation with reuse detection, API keys, admin changes."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from redis.asyncio import Redis
from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from backend.auth.models import ApiKey, AuthSession, RefreshToken, Role, User
from backend.auth.passwords import hash_password, verify_password
from backend.auth.sessions import Principal
from backend.auth.tokens import new_api_key, new_refresh_token, sha256_hex
from backend.config import Settings
from backend.core import ratelimit
from backend.core.db import Database, commit, on_commit, utcnow
from backend.core.errors import (
    AppError,
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from backend.core.pagination import PageParams, make_page, newest_first

MIN_PASSWORD_LENGTH = 10
# Writing last_used_at on every API call would turn reads into writes; a minute is precise enough.
API_KEY_TOUCH_INTERVAL = timedelta(seconds=60)


class InvalidCredentials(Unauthorized):
    code = "auth.invalid_credentials"


class UserDisabled(Forbidden):
    code = "auth.user_disabled"


class InvalidRefresh(Unauthorized):
    code = "auth.invalid_refresh"


class RefreshReused(Unauthorized):
    code = "auth.refresh_reused"


class InvalidApiKey(Unauthorized):
    code = "auth.invalid_api_key"


class SessionRevoked(Unauthorized):
    code = "auth.session_revoked"


# Told, once the transaction has committed, which sessions ended and which users changed, so
# instances that cache live sessions (``backend.auth.sessions``) stop honouring them.
Revoked = Callable[..., Awaitable[None]]


def _notify_after_commit(
    session: AsyncSession,
    notify: Revoked | None,
    *,
    sessions: Iterable[uuid.UUID] = (),
    users: Iterable[uuid.UUID] = (),
) -> None:
    if notify is None:
        return
    ended, changed = list(sessions), list(users)

    async def tell() -> None:
        await notify(sessions=ended, users=changed)

    on_commit(session, tell)


def normalize_email(email: str) -> str:
    return email.strip().lower()


def check_password_policy(password: str, *, email: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AppError(
            f"The password must have at least {MIN_PASSWORD_LENGTH} characters.",
            code="auth.weak_password",
            status=422,
        )
    if password.strip().lower() == email:
        raise AppError(
            "The password must not be the email address.", code="auth.weak_password", status=422
        )


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    user: User | None = await session.scalar(
        select(User).where(User.email == normalize_email(email))
    )
    return user


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    display_name: str | None = None,
    role: Role = Role.user,
) -> User:
    email = normalize_email(email)
    check_password_policy(password, email=email)
    if await get_user_by_email(session, email) is not None:
        raise Conflict("An account with this email already exists.", code="auth.email_taken")
    user = User(
        email=email,
        password_hash=await hash_password(password),
        display_name=display_name,
        role=role,
    )
    session.add(user)
    try:
        # A savepoint, so losing a concurrent race leaves the request's transaction usable.
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(
            "An account with this email already exists.", code="auth.email_taken"
        ) from exc
    return user


def _login_limits(settings: Settings, email: str, ip: str | None) -> list[ratelimit.Limit]:
    limits = [
        ratelimit.Limit(
            f"rl:login:email:{sha256_hex(email)}", settings.login_max_failures_per_email
        )
    ]
    if ip:
        limits.append(ratelimit.Limit(f"rl:login:ip:{ip}", settings.login_max_failures_per_ip))
    return limits


async def authenticate(
    session: AsyncSession,
    redis: Redis,
    settings: Settings,
    *,
    email: str,
    password: str,
    ip: str | None,
) -> User:
    email = normalize_email(email)
    limits = _login_limits(settings, email, ip)
    wait = await ratelimit.blocked_for(redis, limits)
    if wait is not None:
        raise TooManyRequests(
            "Too many failed sign-in attempts; try again later.",
            code="auth.rate_limited",
            retry_after=wait,
        )
    user = await get_user_by_email(session, email)
    valid, new_hash = await verify_password(password, user.password_hash if user else None)
    if user is None or not valid:
        await ratelimit.record_failure(redis, limits, settings.login_failure_window_seconds)
        raise InvalidCredentials("The email or password is incorrect.")
    if user.disabled:
        raise UserDisabled("This account is disabled.")
    if new_hash is not None:
        user.password_hash = new_hash
    await ratelimit.clear(redis, limits[0].key)
    return user


@dataclass(frozen=True)
class IssuedSession:
    auth_session: AuthSession
    refresh_token: str


async def _issue_refresh(
    session: AsyncSession, settings: Settings, auth_session_id: uuid.UUID
) -> str:
    token = new_refresh_token()
    session.add(
        RefreshToken(
            session_id=auth_session_id,
            token_hash=sha256_hex(token),
            expires_at=utcnow() + timedelta(seconds=settings.refresh_token_ttl_seconds),
        )
    )
    await session.flush()
    return token


async def start_session(
    session: AsyncSession, settings: Settings, *, user: User, user_agent: str | None
) -> IssuedSession:
    auth_session = AuthSession(user_id=user.id, user_agent=(user_agent or "")[:255] or None)
    session.add(auth_session)
    await session.flush()
    token = await _issue_refresh(session, settings, auth_session.id)
    return IssuedSession(auth_session, token)


async def find_refresh(session: AsyncSession, token: str | None) -> RefreshToken:
    if not token or len(token) > 256:
        raise InvalidRefresh("No valid refresh token; sign in again.")
    row: RefreshToken | None = await session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == sha256_hex(token))
    )
    if row is None:
        raise InvalidRefresh("No valid refresh token; sign in again.")
    return row


async def revoke_session(
    session: AsyncSession, session_id: uuid.UUID, *, reason: str, notify: Revoked | None = None
) -> None:
    await session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )
    _notify_after_commit(session, notify, sessions=[session_id])


async def rotate_refresh(
    session: AsyncSession, settings: Settings, *, row: RefreshToken, notify: Revoked | None = None
) -> tuple[User, IssuedSession]:
    """Swap a refresh token for a new one; presenting a used one revokes the whole family."""
    auth_session = await session.get(AuthSession, row.session_id)
    if auth_session is None or auth_session.revoked_at is not None:
        raise SessionRevoked("This session has ended; sign in again.")
    now = utcnow()
    # Marking the token used with a guarded UPDATE makes two concurrent refreshes of the same
    # token race in the database: exactly one wins, the other is treated as reuse.
    claimed = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        await revoke_session(session, auth_session.id, reason="refresh_reused", notify=notify)
        # Committed despite the error answer: the revocation is the point of detecting reuse.
        await commit(session)
        raise RefreshReused("This refresh token was already used; the session has been revoked.")
    if row.expires_at <= now:
        raise InvalidRefresh("The refresh token has expired; sign in again.")
    user = await session.get(User, auth_session.user_id)
    if user is None:
        raise InvalidRefresh("No valid refresh token; sign in again.")
    if user.disabled:
        raise UserDisabled("This account is disabled.")
    token = await _issue_refresh(session, settings, auth_session.id)
    return user, IssuedSession(auth_session, token)


# Built once: constructing the statement on every request cost about as much as running it.
_LIVE_SESSION = (
    select(User, AuthSession.revoked_at)
    .join(AuthSession, AuthSession.user_id == User.id)
    .where(User.id == bindparam("user_id"), AuthSession.id == bindparam("session_id"))
)


async def resolve_access(
    session: AsyncSession, *, user_id: uuid.UUID, session_id: uuid.UUID
) -> User:
    """The user behind a (signature-checked) access token, if its session is still live."""
    row = (
        await session.execute(_LIVE_SESSION, {"user_id": user_id, "session_id": session_id})
    ).first()
    if row is None:
        raise Unauthorized("Sign in to continue.")
    user, revoked_at = row
    if revoked_at is not None:
        raise SessionRevoked("This session has ended; sign in again.")
    if user.disabled:
        raise UserDisabled("This account is disabled.")
    return user


_LIVE_PRINCIPAL = (
    select(
        User.id,
        User.email,
        User.display_name,
        User.role,
        User.created_at,
        User.disabled,
        AuthSession.revoked_at,
    )
    .join(AuthSession, AuthSession.user_id == User.id)
    .where(User.id == bindparam("user_id"), AuthSession.id == bindparam("session_id"))
)


async def resolve_principal(
    conn: AsyncConnection, *, user_id: uuid.UUID, session_id: uuid.UUID
) -> Principal:
    """``resolve_access`` as plain columns on a connection, for callers that need no ORM user."""
    row = (
        await conn.execute(_LIVE_PRINCIPAL, {"user_id": user_id, "session_id": session_id})
    ).first()
    if row is None:
        raise Unauthorized("Sign in to continue.")
    if row.revoked_at is not None:
        raise SessionRevoked("This session has ended; sign in again.")
    if row.disabled:
        raise UserDisabled("This account is disabled.")
    return Principal(row.id, row.email, row.display_name, row.role, row.created_at)


async def ended_of(
    db: Database, sessions: set[uuid.UUID], users: set[uuid.UUID]
) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """Of these sessions, those no longer live (revoked, gone, or their user disabled); of these
    users, those disabled or gone. For the session cache's recheck of open sockets."""
    live_sessions: set[uuid.UUID] = set()
    live_users: set[uuid.UUID] = set()
    async with db.reader() as conn:
        if sessions:
            found = await conn.execute(
                select(AuthSession.id)
                .join(User, User.id == AuthSession.user_id)
                .where(
                    AuthSession.id.in_(sessions),
                    AuthSession.revoked_at.is_(None),
                    User.disabled.is_(False),
                )
            )
            live_sessions = {row[0] for row in found}
        if users:
            found = await conn.execute(
                select(User.id).where(User.id.in_(users), User.disabled.is_(False))
            )
            live_users = {row[0] for row in found}
    return sessions - live_sessions, users - live_users


def principal_of(user: User) -> Principal:
    return Principal(user.id, user.email, user.display_name, user.role, user.created_at)


async def resolve_api_key(session: AsyncSession, key: str) -> User:
    if not key or len(key) > 256:
        raise InvalidApiKey("The API key is not valid.")
    row = (
        await session.execute(
            select(ApiKey, User)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.key_hash == sha256_hex(key))
        )
    ).first()
    if row is None:
        raise InvalidApiKey("The API key is not valid.")
    api_key, user = row
    if user.disabled:
        raise UserDisabled("This account is disabled.")
    now = utcnow()
    if api_key.last_used_at is None or now - api_key.last_used_at > API_KEY_TOUCH_INTERVAL:
        api_key.last_used_at = now
    return user


async def create_api_key(session: AsyncSession, *, user: User, name: str) -> tuple[ApiKey, str]:
    key = new_api_key()
    api_key = ApiKey(user_id=user.id, name=name, prefix=key[:10], key_hash=sha256_hex(key))
    session.add(api_key)
    await session.flush()
    return api_key, key


async def list_api_keys(
    session: AsyncSession, *, user: User, page: PageParams
) -> tuple[list[ApiKey], str | None]:
    stmt = newest_first(
        select(ApiKey).where(ApiKey.user_id == user.id), ApiKey.created_at, ApiKey.id, page
    )
    return make_page(list(await session.scalars(stmt)), page)


async def delete_api_key(session: AsyncSession, *, user: User, key_id: uuid.UUID) -> None:
    api_key = await session.get(ApiKey, key_id)
    # Someone else's key answers exactly like a missing one.
    if api_key is None or api_key.user_id != user.id:
        raise NotFound("No such API key.", code="auth.api_key_not_found")
    await session.delete(api_key)
    await session.flush()


async def list_users(
    session: AsyncSession, *, page: PageParams, search: str | None = None
) -> tuple[list[User], str | None]:
    stmt = select(User)
    if search:
        # A plain substring, case-insensitive; LIKE's wildcards in it are matched literally.
        needle = search.lower()
        stmt = stmt.where(
            or_(
                func.lower(User.email).contains(needle, autoescape=True),
                func.lower(func.coalesce(User.display_name, "")).contains(needle, autoescape=True),
            )
        )
    stmt = newest_first(stmt, User.created_at, User.id, page)
    return make_page(list(await session.scalars(stmt)), page)


async def emails_by_id(session: AsyncSession, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Who is who, for admin overviews that name users."""
    if not user_ids:
        return {}
    rows = await session.execute(select(User.id, User.email).where(User.id.in_(user_ids)))
    return {row.id: row.email for row in rows}


async def update_user(
    session: AsyncSession,
    *,
    actor: User,
    user_id: uuid.UUID,
    role: Role | None,
    disabled: bool | None,
    notify: Revoked | None = None,
) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.", code="admin.user_not_found")
    if user.id == actor.id and (
        (role is not None and role != user.role) or (disabled is not None and disabled)
    ):
        # An admin demoting or disabling themselves could leave nobody able to undo it.
        raise Conflict("Admins cannot demote or disable themselves.", code="admin.self_change")
    if role is not None:
        user.role = role
    if disabled is not None:
        user.disabled = disabled
        if disabled:
            await session.execute(
                update(AuthSession)
                .where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
                .values(revoked_at=utcnow(), revoked_reason="user_disabled")
            )
    await session.flush()
    # Cached sessions carry the role and stand for an enabled user: both must be re-read.
    _notify_after_commit(session, notify, users=[user.id])
    return user


async def ensure_admin(
    session: AsyncSession,
    *,
    email: str,
    password: str | None,
    reset_password: bool = False,
    notify: Revoked | None = None,
) -> tuple[User, str]:
    """Make ``email`` an admin: ``created``, ``promoted`` (its password untouched) or, only when
    asked, ``reset`` (new password, every sign-in session of the account revoked)."""
    existing = await get_user_by_email(session, email)
    if existing is None:
        if password is None:
            raise ValueError("a new admin needs a password")
        user = await create_user(session, email=email, password=password, role=Role.admin)
        return user, "created"
    if reset_password:
        if password is None:
            raise ValueError("resetting needs the new password")
        check_password_policy(password, email=existing.email)
        existing.password_hash = await hash_password(password)
        # Whoever held the old password may be signed in: those sessions end with it.
        await session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == existing.id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason="password_reset")
        )
    existing.role = Role.admin
    existing.disabled = False
    await session.flush()
    _notify_after_commit(session, notify, users=[existing.id])
    return existing, "reset" if reset_password else "promoted"


async def user_exists(session: AsyncSession, *, email: str) -> bool:
    return await get_user_by_email(session, email) is not None
