"""The gallery's listing: search by name, filters by status, source and date, and a total over
all pages, the same on Postgres (committed, as in production) and on SQLite (embedded)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from backend.core.pagination import encode_cursor
from backend.delivery.service import LINK_SIZES
from backend.images.models import Blob, Image, ImageStatus
from tests.auth.test_router import assert_problem
from tests.conftest import PASSWORD, client_for, unique_email

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def stack(app_on_each_database: FastAPI) -> FastAPI:
    return app_on_each_database


@dataclass
class Owner:
    client: httpx.AsyncClient
    user_id: uuid.UUID
    app: FastAPI

    async def add(
        self,
        name: str,
        *,
        status: ImageStatus = ImageStatus.failed,
        source: str = "upload",
        at: datetime = T0,
    ) -> uuid.UUID:
        """A record straight into the database: listing needs no stored bytes."""
        image = Image(
            id=uuid.uuid4(),
            user_id=self.user_id,
            original_name=name,
            status=status,
            source=source,
            created_at=at,
            error="not an image" if status == ImageStatus.failed else None,
        )
        async with self.app.state.resources.db.sessionmaker() as session:
            session.add(image)
            await session.commit()
        return image.id

    async def names(self, **params: Any) -> list[str]:
        answer = await self.client.get("/api/images", params={"limit": 100, **params})
        assert answer.status_code == 200, answer.text
        return sorted(item["original_name"] for item in answer.json()["items"])


@pytest.fixture
async def owner(stack: FastAPI) -> AsyncIterator[Owner]:
    async with client_for(stack) as c:
        answer = await c.post(
            "/api/auth/register", json={"email": unique_email("lister"), "password": PASSWORD}
        )
        assert answer.status_code == 201, answer.text
        yield Owner(c, uuid.UUID(answer.json()["id"]), stack)


async def test_search_is_a_case_insensitive_substring_with_wildcards_as_text(
    owner: Owner,
) -> None:
    for name in ("Holiday_2024.jpg", "holiday-beach.png", "100%.jpg", "a_b.jpg", "axb.jpg"):
        await owner.add(name)
    assert await owner.names(q="HOLIDAY") == ["Holiday_2024.jpg", "holiday-beach.png"]
    assert await owner.names(q="day-B") == ["holiday-beach.png"]
    # LIKE's wildcards match only themselves: `_` is not "any character", `%` not "anything".
    assert await owner.names(q="_") == ["Holiday_2024.jpg", "a_b.jpg"]
    assert await owner.names(q="a_b") == ["a_b.jpg"]
    assert await owner.names(q="%") == ["100%.jpg"]
    # The escape character itself, and a backslash, are plain text too.
    assert await owner.names(q="/") == []
    assert await owner.names(q="\\") == []
    # Blank means no search.
    assert len(await owner.names(q="  ")) == 5
    assert await owner.names(q="nothing-like-this") == []


async def test_filters_by_status_source_and_date_with_a_total(owner: Owner) -> None:
    await owner.add("old.jpg", status=ImageStatus.ready, at=T0 - timedelta(days=10))
    await owner.add("edited.png", status=ImageStatus.ready, source="edit", at=T0)
    await owner.add("imported.jpg", status=ImageStatus.processing, source="batch", at=T0)
    await owner.add("broken.jpg", at=T0 + timedelta(days=1))
    await owner.add("new.jpg", status=ImageStatus.ready, at=T0 + timedelta(days=5))

    assert await owner.names(status="ready") == ["edited.png", "new.jpg", "old.jpg"]
    assert await owner.names(source="edit") == ["edited.png"]
    assert await owner.names(source="batch") == ["imported.jpg"]
    assert await owner.names(source="upload") == ["broken.jpg", "new.jpg", "old.jpg"]
    # created_after is inclusive and created_before exclusive, so days tile without overlap.
    day = {"created_after": T0.isoformat(), "created_before": (T0 + timedelta(days=1)).isoformat()}
    assert await owner.names(**day) == ["edited.png", "imported.jpg"]
    assert await owner.names(created_after=(T0 + timedelta(days=1)).isoformat()) == [
        "broken.jpg",
        "new.jpg",
    ]
    # Another zone is the same moment; a time without a zone is UTC.
    assert await owner.names(created_before="2026-03-01T13:00:00+02:00") == ["old.jpg"]
    assert await owner.names(created_before="2026-03-01T12:00:00") == ["old.jpg"]
    # Filters combine.
    combined = await owner.client.get(
        "/api/images", params={"status": "ready", "source": "upload", "q": "O", **day}
    )
    assert combined.json() == {"items": [], "next_cursor": None, "total": 0}
    answer = await owner.client.get("/api/images", params={"status": "ready", "q": "e"})
    body = answer.json()
    assert body["total"] == 2
    assert [i["original_name"] for i in body["items"]] == ["new.jpg", "edited.png"]


async def test_total_counts_every_page_and_paging_keeps_the_filters(owner: Owner) -> None:
    made = {await owner.add(f"shot-{n:03}.jpg", at=T0 + timedelta(minutes=n)): n for n in range(25)}
    await owner.add("other.jpg", at=T0 + timedelta(minutes=30))
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"q": "shot-", "limit": 10}
        if cursor:
            params["cursor"] = cursor
        body = (await owner.client.get("/api/images", params=params)).json()
        assert body["total"] == 25
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 25
    assert {uuid.UUID(i) for i in seen} == set(made)
    assert [made[uuid.UUID(i)] for i in seen] == list(range(24, -1, -1))  # newest first
    everything = (await owner.client.get("/api/images")).json()
    assert everything["total"] == 26
    assert len(everything["items"]) == 20


async def test_another_users_images_are_never_counted(owner: Owner) -> None:
    await owner.add("mine.jpg")
    async with client_for(owner.app) as other:
        answer = await other.post(
            "/api/auth/register", json={"email": unique_email("other"), "password": PASSWORD}
        )
        assert answer.status_code == 201
        body = (await other.get("/api/images", params={"q": "mine"})).json()
    assert body == {"items": [], "next_cursor": None, "total": 0}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"status": "lost"}, "request.validation"),
        ({"limit": "0"}, "request.validation"),
        ({"limit": "101"}, "request.validation"),
        ({"limit": "ten"}, "request.validation"),
        ({"cursor": "c" * 201}, "request.validation"),
        ({"source": "camera"}, "request.validation"),
        ({"q": "x" * 201}, "request.validation"),
        ({"q": "nul\x00byte"}, "request.validation"),
        ({"created_after": "yesterday"}, "request.validation"),
        ({"created_before": "2026-13-45"}, "request.validation"),
        ({"created_after": "0001-01-01T00:00:00+01:00"}, "image.invalid_date_range"),
        ({"created_before": "9999-12-31T23:59:59-05:00"}, "image.invalid_date_range"),
        (
            {"created_after": "2026-03-02T00:00:00Z", "created_before": "2026-03-01T00:00:00Z"},
            "image.invalid_date_range",
        ),
        ({"cursor": "bm90LWEtY3Vyc29y"}, "pagination.invalid_cursor"),
    ],
)
async def test_bad_list_parameters_are_422_problems(
    owner: Owner, params: dict[str, str], code: str
) -> None:
    await owner.add("any.jpg")
    assert_problem(await owner.client.get("/api/images", params=params), 422, code)


async def test_a_bad_list_parameter_names_itself(owner: Owner) -> None:
    # Read by one model (core.querymodel), reported as FastAPI reports a query parameter.
    answer = await owner.client.get("/api/images", params={"limit": "0", "extra": "ignored"})
    assert_problem(answer, 422, "request.validation")
    assert [error["loc"] for error in answer.json()["errors"]] == [["query", "limit"]]


async def test_unknown_list_parameters_are_ignored(owner: Owner) -> None:
    await owner.add("any.jpg")
    answer = await owner.client.get("/api/images", params={"limit": "5", "sort": "name"})
    assert answer.status_code == 200
    assert [item["original_name"] for item in answer.json()["items"]] == ["any.jpg"]


async def test_far_dates_inside_the_range_are_fine(owner: Owner) -> None:
    await owner.add("any.jpg")
    wide = {"created_after": "0001-01-01T00:00:00Z", "created_before": "9999-12-31T00:00:00Z"}
    assert await owner.names(**wide) == ["any.jpg"]


async def test_the_listing_needs_a_session(stack: FastAPI) -> None:
    async with client_for(stack) as anonymous:
        answer = await anonymous.get("/api/images", params={"q": "x"})
    assert_problem(answer, 401, "auth.unauthenticated")


async def test_a_listed_image_is_exactly_its_own_answer(owner: Owner) -> None:
    """The listing encodes its rows directly; each item must still be what
    ``GET /api/images/{id}`` answers (ImageOut), with or without stored bytes, EXIF and links."""
    async with owner.app.state.resources.db.sessionmaker() as session:
        blob = Blob(
            user_id=owner.user_id,
            sha256="ab" * 32,
            storage_key=f"originals/{owner.user_id}/x.jpg",
            content_type="image/jpeg",
            format="jpeg",
            size_bytes=12345,
            width=640,
            height=480,
            exif={"camera_make": "Make", "iso": 200, "gps": {"lat": 1.5, "lon": -2.25}},
            thumbnails={"small": "t/s.jpg", "medium": "t/m.jpg"},
        )
        session.add(blob)
        await session.flush()
        for name, status, with_blob in (
            ("ready.jpg", ImageStatus.ready, True),
            ("failed.jpg", ImageStatus.failed, True),
            ("pending.jpg", ImageStatus.processing, False),
        ):
            session.add(
                Image(
                    user_id=owner.user_id,
                    blob_id=blob.id if with_blob else None,
                    original_name=name,
                    status=status,
                    size_bytes=None if with_blob else 999,
                    caption="a caption" if with_blob else None,
                    created_at=T0,
                    processed_at=T0 if with_blob else None,
                )
            )
        await session.commit()
    listed = (await owner.client.get("/api/images")).json()
    assert listed["total"] == 3
    assert len(listed["items"]) == 3
    for item in listed["items"]:
        single = await owner.client.get(f"/api/images/{item['id']}")
        assert single.status_code == 200, single.text
        assert item == single.json()
    by_name = {item["original_name"]: item for item in listed["items"]}
    assert set(by_name["ready.jpg"]["delivery"]) == set(LINK_SIZES)
    assert by_name["ready.jpg"]["exif"]["gps"] == {"lat": 1.5, "lon": -2.25}
    assert by_name["failed.jpg"]["delivery"] is None
    assert by_name["pending.jpg"]["size_bytes"] == 999


async def test_unfiltered_paging_matches_the_filtered_order_with_ties(owner: Owner) -> None:
    """Without filters the listing runs a statement built once (values bound); its pages must be
    those of the filtered path: newest first, ties on time broken by id, a total on every page."""
    for n in range(7):
        # Three share one moment, so the id decides their order across a page boundary.
        await owner.add(f"img-{n}.jpg", at=T0 + timedelta(minutes=min(n, 2)))

    async def pages(**params: Any) -> list[str]:
        seen: list[str] = []
        cursor = None
        for _ in range(5):
            query = {**params, "limit": 3, **({"cursor": cursor} if cursor else {})}
            body = (await owner.client.get("/api/images", params=query)).json()
            assert body["total"] == 7
            seen += [item["id"] for item in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                return seen
        raise AssertionError("too many pages")

    unfiltered = await pages()
    assert len(unfiltered) == len(set(unfiltered)) == 7
    assert unfiltered == await pages(q="img-")
    past_the_end = encode_cursor(T0 - timedelta(days=1), uuid.uuid4())
    body = (await owner.client.get("/api/images", params={"cursor": past_the_end})).json()
    assert body == {"items": [], "next_cursor": None, "total": 7}
