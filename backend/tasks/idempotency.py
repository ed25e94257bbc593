"""``Idempotency-Key`` for creating endpoints: one key, one effect, the first answer replayed.

The key row is inserted before the endpoint's work, inside the same transaction. A concurrent
retry with the same key blocks on the unique index until the first request commits, then finds
its row and replays the answer; if the first request fails, its key row rolls back with it and
the retry runs normally.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import UploadFile

from backend.auth.deps import CurrentUser
from backend.auth.models import User
from backend.core.db import SessionDep, utcnow
from backend.core.errors import AppError
from backend.tasks.models import IdempotencyKey

KEY_TTL = timedelta(hours=24)
REPLAY_HEADER = "Idempotent-Replayed"


class IdempotencyError(AppError):
    status = 422
    code = "idempotency.invalid_key"


class Idempotency:
    def __init__(
        self, session: AsyncSession, user: User, key: str | None, fingerprint: str
    ) -> None:
        self.session = session
        self.user = user
        self.key = key
        self.fingerprint = fingerprint

    async def _existing(self) -> IdempotencyKey | None:
        row: IdempotencyKey | None = await self.session.scalar(
            select(IdempotencyKey).where(
                IdempotencyKey.user_id == self.user.id, IdempotencyKey.key == self.key
            )
        )
        return row

    def _replay(self, row: IdempotencyKey) -> JSONResponse:
        if row.fingerprint != self.fingerprint:
            raise IdempotencyError(
                "This Idempotency-Key was already used for a different request.",
                code="idempotency.key_reused",
            )
        if row.status_code == 0:
            # A claim without an answer yet: never "replay" it as an empty, statusless response.
            raise IdempotencyError(
                "A request with this Idempotency-Key is still in progress.",
                code="idempotency.in_progress",
                status=409,
            )
        return JSONResponse(row.body, status_code=row.status_code, headers={REPLAY_HEADER: "true"})

    async def respond(
        self, produce: Callable[[], Awaitable[BaseModel]], *, status_code: int
    ) -> JSONResponse:
        if self.key is None:
            return JSONResponse((await produce()).model_dump(mode="json"), status_code=status_code)
        row = await self._existing()
        if row is not None and row.created_at > utcnow() - KEY_TTL:
            return self._replay(row)
        if row is not None:
            await self.session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == row.id))
        claim = IdempotencyKey(
            user_id=self.user.id,
            key=self.key,
            fingerprint=self.fingerprint,
            status_code=0,
            body=None,
        )
        try:
            async with self.session.begin_nested():
                self.session.add(claim)
                await self.session.flush()
        except IntegrityError:
            # A concurrent request with this key committed first: answer as it did.
            row = await self._existing()
            if row is None:
                raise IdempotencyError(
                    "A request with this Idempotency-Key is still in progress.",
                    code="idempotency.in_progress",
                    status=409,
                ) from None
            return self._replay(row)
        body: Any = (await produce()).model_dump(mode="json")
        claim.status_code, claim.body = status_code, body
        await self.session.flush()
        return JSONResponse(body, status_code=status_code)


async def idempotency(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Repeat a creating request safely: the same key within 24 h returns the "
            "first answer and creates nothing new.",
        ),
    ] = None,
) -> Idempotency:
    if idempotency_key is not None and not (
        1 <= len(idempotency_key) <= 255 and idempotency_key.isprintable()
    ):
        raise IdempotencyError("Idempotency-Key must be 1 to 255 printable characters.")
    fingerprint = await _fingerprint(request) if idempotency_key is not None else ""
    return Idempotency(session, user, idempotency_key, fingerprint)


async def _fingerprint(request: Request) -> str:
    """Method, path and body; a form is hashed field by field, since FastAPI has already
    consumed its stream (Starlette caches the parsed form)."""
    digest = hashlib.sha256(f"{request.method} {request.url.path}\n".encode())
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        for name, value in sorted(form.multi_items(), key=lambda item: item[0]):
            digest.update(name.encode() + b"\0")
            if isinstance(value, UploadFile):
                digest.update(await value.read())
                await value.seek(0)
            else:
                digest.update(value.encode())
            digest.update(b"\0")
    else:
        digest.update(await request.body())
    return digest.hexdigest()


IdempotencyDep = Annotated[Idempotency, Depends(idempotency)]
