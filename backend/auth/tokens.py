"""Access JWTs, opaque refresh tokens, API keys and CSRF tokens.

Access tokens are HS256 JWTs decoded with an explicit algorithm list (``alg: none`` and any
other algorithm are refused) and must carry ``exp``, ``iat``, ``sub`` and ``sid`` (the sign-in
session, checked against the database on every request so logout takes effect at once).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

ALGORITHM = "HS256"
API_KEY_PREFIX = "atk_"


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID


class InvalidToken(Exception):
    pass


def create_access_token(
    *, secret: str, user_id: uuid.UUID, session_id: uuid.UUID, ttl_seconds: int
) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "sid": str(session_id),
        "iat": now,
        "exp": now + timedelta(seconds=ttl_seconds),
        "typ": "access",
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


# Verified access tokens with their expiry, most recent last. A token is immutable, so its
# verdict holds until it expires; revocation is by session id, which is still checked on every
# request. Saves the signature check and claim parsing on each request of a signed-in browser.
_VERIFIED: dict[tuple[str, str], tuple[AccessClaims, float]] = {}
VERIFIED_CACHE_SIZE = 4096


def decode_access_token(token: str, *, secret: str) -> AccessClaims:
    key = (secret, token)
    hit = _VERIFIED.get(key)
    if hit is not None:
        claims, expires = hit
        if time.time() < expires:
            return claims
        del _VERIFIED[key]
    try:
        decoded = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "iat", "sub", "sid"]},
        )
        if decoded.get("typ") != "access":
            raise InvalidToken("not an access token")
        claims = AccessClaims(uuid.UUID(decoded["sub"]), uuid.UUID(decoded["sid"]))
        expires = float(decoded["exp"])
    except (jwt.PyJWTError, ValueError, TypeError, AttributeError) as exc:
        raise InvalidToken(str(exc)) from exc
    if len(_VERIFIED) >= VERIFIED_CACHE_SIZE:
        del _VERIFIED[next(iter(_VERIFIED))]
    _VERIFIED[key] = (claims, expires)
    return claims


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def csrf_token_for(session_id: uuid.UUID, *, secret: str) -> str:
    """The CSRF token is bound to the sign-in session, so a cookie planted by a sibling
    subdomain (the classic double-submit weakness) does not match the victim's session."""
    return hmac.new(secret.encode(), f"csrf:{session_id}".encode(), hashlib.sha256).hexdigest()
