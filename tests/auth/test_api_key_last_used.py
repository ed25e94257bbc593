"""An API key's ``last_used_at`` (shown as "Last used" in the app) is written when the key
authenticates a request, at most once per API_KEY_TOUCH_INTERVAL, so reads stay reads."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import update

from backend.auth.models import ApiKey
from backend.auth.service import API_KEY_TOUCH_INTERVAL
from backend.core.db import Database
from tests.conftest import SignedIn, client_for


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def listed(alice: SignedIn, key_id: str) -> dict[str, Any]:
    page = (await alice.client.get("/api/auth/api-keys")).json()
    found: dict[str, Any] = next(k for k in page["items"] if k["id"] == key_id)
    return found


async def test_last_used_at_is_written_when_the_key_is_used_at_a_bounded_rate(
    app: FastAPI, alice: SignedIn, database: Database
) -> None:
    made = await alice.client.post("/api/auth/api-keys", json={"name": "shop"}, headers=alice.csrf)
    assert made.status_code == 201, made.text
    key, key_id = made.json()["key"], made.json()["id"]
    assert made.json()["last_used_at"] is None
    assert (await listed(alice, key_id))["last_used_at"] is None

    async with client_for(app, headers={"X-API-Key": key}) as server:
        assert (await server.get("/api/images")).status_code == 200
        first = (await listed(alice, key_id))["last_used_at"]
        assert first is not None
        created = parse(made.json()["created_at"])
        assert created <= parse(first) < created + timedelta(minutes=1)

        # Used again at once: no new write within the interval.
        assert (await server.get("/api/images")).status_code == 200
        assert (await listed(alice, key_id))["last_used_at"] == first

        # Once the interval has passed, the next use records itself again.
        earlier = parse(first) - API_KEY_TOUCH_INTERVAL - timedelta(seconds=5)
        async with database.sessionmaker() as session:
            await session.execute(
                update(ApiKey).where(ApiKey.id == uuid.UUID(key_id)).values(last_used_at=earlier)
            )
            await session.commit()
        assert (await listed(alice, key_id))["last_used_at"] != first
        assert (await server.get("/api/images")).status_code == 200
        again = (await listed(alice, key_id))["last_used_at"]
        assert parse(again) >= parse(first)
