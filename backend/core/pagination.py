"""Keyset pagination with opaque cursors: ``?limit=&cursor=`` → ``{items, next_cursor}``.

The cursor encodes the (created_at, id) of the last row, so pages stay stable while new rows
arrive, and a forged or stale cursor is a 422, not a 500.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from backend.core.errors import AppError

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class PageParams(BaseModel):
    limit: int = 20
    cursor: str | None = None


# The two query parameters, for an endpoint that declares them itself (a dependency fewer).
Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1..100")]
Cursor = Annotated[str | None, Query(max_length=200, description="Opaque cursor")]


async def page_params(limit: Limit = 20, cursor: Cursor = None) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


PageDep = Annotated[PageParams, Depends(page_params)]


class InvalidCursor(AppError):
    status = 422
    code = "pagination.invalid_cursor"


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, row_id = json.loads(base64.urlsafe_b64decode(padded))
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("naive")
        return moment, uuid.UUID(row_id)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise InvalidCursor("The cursor is not valid.") from exc


def newest_first(
    stmt: Select[Any],
    created_col: InstrumentedAttribute[datetime],
    id_col: InstrumentedAttribute[uuid.UUID],
    params: PageParams,
) -> Select[Any]:
    """Order newest first and skip past the cursor; fetches one extra row to know if more exist."""
    if params.cursor:
        created, row_id = decode_cursor(params.cursor)
        stmt = stmt.where(or_(created_col < created, and_(created_col == created, id_col < row_id)))
    return stmt.order_by(created_col.desc(), id_col.desc()).limit(params.limit + 1)


def make_page(rows: list[Any], params: PageParams) -> tuple[list[Any], str | None]:
    """Split the extra row off; the cursor points at the last row returned."""
    if len(rows) <= params.limit:
        return rows, None
    rows = rows[: params.limit]
    last = rows[-1]
    return rows, encode_cursor(last.created_at, last.id)
