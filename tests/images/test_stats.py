"""``/api/stats`` before anything finished: no rate and no average, rather than a false 0 %."""

from __future__ import annotations

import uuid

from sqlalchemy import update

from backend.core.db import Database
from backend.images.models import Image, ImageStatus
from tests.ai.test_router import solid, upload
from tests.conftest import SignedIn


async def test_nothing_finished_gives_null_rate_and_average(
    alice: SignedIn, database: Database
) -> None:
    empty = (await alice.client.get("/api/stats")).json()
    assert (empty["total"], empty["success_rate"], empty["average_processing_time_seconds"]) == (
        0,
        None,
        None,
    )

    image = await upload(alice.client, solid((1, 2, 3)), alice.csrf)
    # Still processing: counted, but not finished either way.
    async with database.sessionmaker() as session:
        await session.execute(
            update(Image)
            .where(Image.id == uuid.UUID(image["id"]))
            .values(status=ImageStatus.processing, processed_at=None)
        )
        await session.commit()
    pending = (await alice.client.get("/api/stats")).json()
    assert pending["total"] == 1
    assert pending["by_status"]["processing"] == 1
    assert (pending["success_rate"], pending["average_processing_time_seconds"]) == (None, None)

    async with database.sessionmaker() as session:
        await session.execute(
            update(Image).where(Image.id == uuid.UUID(image["id"])).values(status=ImageStatus.ready)
        )
        await session.commit()
    done = (await alice.client.get("/api/stats")).json()
    assert done["success_rate"] == 1.0
