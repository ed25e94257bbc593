"""Access tokens: a verified token is remembered until its own expiry, never past it."""

from __future__ import annotations

import time
import uuid

import pytest

from backend.auth import tokens
from backend.auth.tokens import InvalidToken, create_access_token, decode_access_token

SECRET = "s" * 40


def test_a_remembered_token_still_expires() -> None:
    user, sid = uuid.uuid4(), uuid.uuid4()
    token = create_access_token(secret=SECRET, user_id=user, session_id=sid, ttl_seconds=1)
    claims = decode_access_token(token, secret=SECRET)
    assert (claims.user_id, claims.session_id) == (user, sid)
    assert tokens._VERIFIED[(SECRET, token)][0] == claims
    assert decode_access_token(token, secret=SECRET) == claims  # from memory
    time.sleep(1.2)  # past ``exp`` (whole seconds)
    with pytest.raises(InvalidToken):
        decode_access_token(token, secret=SECRET)
    assert (SECRET, token) not in tokens._VERIFIED


def test_a_token_is_remembered_per_secret() -> None:
    token = create_access_token(
        secret=SECRET, user_id=uuid.uuid4(), session_id=uuid.uuid4(), ttl_seconds=60
    )
    decode_access_token(token, secret=SECRET)
    with pytest.raises(InvalidToken):
        decode_access_token(token, secret="t" * 40)


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "VERIFIED_CACHE_SIZE", 3)
    monkeypatch.setattr(tokens, "_VERIFIED", {})
    for _ in range(5):
        token = create_access_token(
            secret=SECRET, user_id=uuid.uuid4(), session_id=uuid.uuid4(), ttl_seconds=60
        )
        decode_access_token(token, secret=SECRET)
    assert len(tokens._VERIFIED) == 3
