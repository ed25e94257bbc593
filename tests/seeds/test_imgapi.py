"""Seed 001 (imgapi) kept its promises: its own test list, rewritten against our API.

imgapi's README lists its endpoints (``POST /api/images``, ``GET /api/images``,
``GET /api/images/{image_id}``, ``GET /api/images/{image_id}/thumbnails/{size}``,
``GET /api/stats``) and tests: a successful upload, a failed upload (``file.xlsx``) that is
still recorded, listing, getting one record, thumbnails, and stats that count failures; its
validator checks the extension, the MIME type, the magic bytes and decodes the image with a
bomb guard. Each case below is that behaviour through our endpoints, on the real stack:
Postgres, Redis, SeaweedFS as S3 and a worker making thumbnails.

What differs by design (see the README's "Coming from…"): ``image_id`` is ``id``; a refusal is
an RFC 9457 problem whose ``image_id`` names the failed record, not ``{"status": "failed"}``;
``success_rate`` is a fraction, not ``"75.00%"``; thumbnails answer a redirect to a signed URL.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage
from redis.asyncio import Redis

from backend.composition import AppResources
from backend.config import Settings
from backend.core.db import Database
from backend.main import create_app
from backend.tasks.worker import running_worker
from tests.auth.test_router import assert_problem
from tests.conftest import PASSWORD, client_for, unique_email
from tests.photos import PHOTO, PORTRAIT
from tests.servers import S3Server

MAX_UPLOAD = 1024 * 1024


@dataclass
class Client:
    http: httpx.AsyncClient

    @property
    def csrf(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.http.cookies.get("csrf_token") or ""}

    async def upload(
        self, name: str, data: bytes, content_type: str = "image/jpeg"
    ) -> httpx.Response:
        """imgapi's ``curl -F file=@…`` against ``POST /api/images``."""
        return await self.http.post(
            "/api/images", files={"file": (name, data, content_type)}, headers=self.csrf
        )

    async def get(self, path: str, **params: Any) -> Any:
        answer = await self.http.get(path, params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    async def wait_ready(self, image_id: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            image: dict[str, Any] = await self.get(f"/api/images/{image_id}")
            if image["status"] != "processing" or time.monotonic() > deadline:
                return image
            await asyncio.sleep(0.1)

    async def refused(self, answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
        """The problem names a failed record; that record is listed under ``status=failed``."""
        problem = assert_problem(answer, status, code)
        image_id = problem.get("image_id")
        assert isinstance(image_id, str), problem
        record: dict[str, Any] = await self.get(f"/api/images/{image_id}")
        assert (record["status"], record["error_code"]) == ("failed", code)
        assert record["error"]
        failed = await self.get("/api/images", status="failed")
        assert image_id in [item["id"] for item in failed["items"]]
        return record


@pytest.fixture
async def client(
    settings: Settings, committed_database: Database, redis: Redis, s3_server: S3Server
) -> AsyncIterator[Client]:
    s3 = s3_server
    app_settings = settings.model_copy(
        update={
            "storage_url": f"s3://{s3.bucket}?endpoint_url={s3.endpoint_url}&region={s3.region}"
            f"&access_key={s3.access_key}&secret_key={s3.secret_key}",
            "max_upload_bytes": MAX_UPLOAD,
        }
    )
    resources = AppResources(app_settings, db=committed_database, redis=redis)
    app = create_app(app_settings, resources=resources)
    try:
        async with running_worker(resources), client_for(app) as http:
            answer = await http.post(
                "/api/auth/register", json={"email": unique_email("imgapi"), "password": PASSWORD}
            )
            assert answer.status_code == 201, answer.text
            yield Client(http)
    finally:
        await resources.storage.close()


def photo(max_side: int = 1200, *, exif: dict[int, str] | None = None) -> bytes:
    """A real photograph as a JPEG, optionally with EXIF tags."""
    with PILImage.open(PHOTO) as source:
        image = source.convert("RGB")
    image.thumbnail((max_side, max_side))
    out = io.BytesIO()
    tags = PILImage.Exif()
    for tag, value in (exif or {}).items():
        tags[tag] = value
    image.save(out, "JPEG", quality=85, exif=tags.tobytes())
    return out.getvalue()


def xlsx() -> bytes:
    # An .xlsx file is a ZIP archive: its real first bytes.
    return b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00" + b"\x00" * 200


# --- upload ----------------------------------------------------------------------------------


async def test_successful_upload_returns_the_record(client: Client) -> None:
    data = photo()
    answer = await client.upload("photo.jpg", data)

    assert answer.status_code == 201, answer.text
    image = answer.json()
    assert image["original_name"] == "photo.jpg"
    assert image["status"] == "processing"
    assert image["error"] is None
    # imgapi's "metadata" block, flattened onto the record.
    assert (image["width"], image["height"]) == (1200, 750)
    assert (image["format"], image["size_bytes"]) == ("jpeg", len(data))
    assert len(image["sha256"]) == 64
    ready = await client.wait_ready(image["id"])
    assert ready["status"] == "ready"
    assert ready["processed_at"] is not None
    assert ready["thumbnails"] == {
        "small": f"/api/images/{image['id']}/thumbnails/small",
        "medium": f"/api/images/{image['id']}/thumbnails/medium",
    }


async def test_xlsx_upload_is_refused_and_still_recorded(client: Client) -> None:
    answer = await client.upload(
        "file.xlsx",
        xlsx(),
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    )

    record = await client.refused(answer, 422, "upload.unsupported_type")
    assert record["original_name"] == "file.xlsx"
    assert (record["thumbnails"], record["sha256"]) == (None, None)
    stats = await client.get("/api/stats")
    assert (stats["total"], stats["failed"]) == (1, 1)


@pytest.mark.parametrize(
    ("name", "content_type", "code"),
    [
        ("...", "image/jpeg", "upload.bad_filename"),  # nothing usable left of the name
        ("photo.jpg.exe", "image/jpeg", "upload.unsupported_type"),
        ("photo.png", "image/jpeg", "upload.type_mismatch"),  # the name and the type disagree
        ("photo.jpg", "application/pdf", "upload.unsupported_type"),
    ],
)
async def test_bad_names_and_types_are_refused_and_recorded(
    client: Client, name: str, content_type: str, code: str
) -> None:
    answer = await client.upload(name, photo(200), content_type)

    record = await client.refused(answer, 422, code)
    assert record["original_name"]


async def test_empty_file_is_refused_and_recorded(client: Client) -> None:
    record = await client.refused(await client.upload("empty.jpg", b""), 422, "upload.empty")
    assert record["original_name"] == "empty.jpg"


async def test_oversized_file_is_refused_and_recorded(client: Client) -> None:
    answer = await client.upload("big.jpg", b"\xff\xd8\xff" + b"\x00" * MAX_UPLOAD)

    record = await client.refused(answer, 413, "upload.too_large")
    assert record["original_name"] == "big.jpg"


async def test_presigned_refusal_is_recorded_too(client: Client) -> None:
    answer = await client.http.post(
        "/api/upload/presigned-url",
        json={"filename": "file.xlsx", "content_type": "application/vnd.ms-excel", "size_bytes": 9},
        headers=client.csrf,
    )

    await client.refused(answer, 422, "upload.unsupported_type")


async def test_bytes_that_lie_about_their_type_are_recorded(client: Client) -> None:
    # imgapi's magic-bytes check: a PNG sent as a JPEG.
    out = io.BytesIO()
    PILImage.open(PORTRAIT).convert("RGB").resize((64, 64)).save(out, "PNG")

    record = await client.refused(
        await client.upload("photo.jpg", out.getvalue()), 422, "upload.magic_mismatch"
    )
    assert record["original_name"] == "photo.jpg"


async def test_truncated_image_is_recorded(client: Client) -> None:
    # imgapi's "Pillow verify": the JPEG header is right, the rest is missing.
    data = photo(400)[:600]

    answer = await client.upload("cut.jpg", data)

    record = await client.refused(answer, 422, "upload.corrupt")
    assert record["size_bytes"] == 600


# --- reads -----------------------------------------------------------------------------------


async def test_list_shows_every_record_newest_first(client: Client) -> None:
    first = (await client.upload("first.jpg", photo(300))).json()
    bad = await client.upload("fake.jpg", b"GIF89a" + b"\x00" * 64)
    second = (await client.upload("second.jpg", photo(320))).json()
    failed_id = bad.json()["image_id"]

    listed = await client.get("/api/images")
    assert [item["id"] for item in listed["items"]] == [second["id"], failed_id, first["id"]]
    assert listed["next_cursor"] is None
    assert [i["id"] for i in (await client.get("/api/images", status="failed"))["items"]] == [
        failed_id
    ]
    page = await client.get("/api/images", limit=2)
    assert len(page["items"]) == 2
    rest = await client.get("/api/images", limit=2, cursor=page["next_cursor"])
    assert [item["id"] for item in rest["items"]] == [first["id"]]


async def test_get_one_record_and_unknown_ids(client: Client) -> None:
    created = (await client.upload("one.jpg", photo(300))).json()

    got = await client.get(f"/api/images/{created['id']}")
    assert (got["id"], got["original_name"], got["sha256"]) == (
        created["id"],
        "one.jpg",
        created["sha256"],
    )
    missing = await client.http.get("/api/images/00000000-0000-4000-8000-000000000000")
    assert_problem(missing, 404, "image.not_found")
    assert_problem(await client.http.get("/api/images/img123"), 422, "request.validation")


async def test_exif_is_extracted(client: Client) -> None:
    # imgapi's exif_job: camera make and model (tags 0x010F, 0x0110) end up on the record.
    data = photo(400, exif={0x010F: "Canon", 0x0110: "EOS 5D"})

    image = (await client.upload("camera.jpg", data)).json()

    assert image["exif"]["camera_make"] == "Canon"
    assert image["exif"]["camera_model"] == "EOS 5D"


async def test_thumbnails_small_and_medium(client: Client) -> None:
    image = (await client.upload("wings.jpg", photo(1600))).json()
    assert (await client.wait_ready(image["id"]))["status"] == "ready"

    for size, long_side in (("small", 200), ("medium", 800)):
        answer = await client.http.get(f"/api/images/{image['id']}/thumbnails/{size}")
        assert answer.status_code == 307, answer.text
        async with httpx.AsyncClient(timeout=30) as storage:
            fetched = await storage.get(answer.headers["location"])
        assert fetched.status_code == 200
        thumb = PILImage.open(io.BytesIO(fetched.content))
        assert thumb.format == "JPEG"
        assert max(thumb.size) == long_side
    unknown = await client.http.get(f"/api/images/{image['id']}/thumbnails/large")
    assert unknown.status_code == 422


async def test_a_failed_record_has_no_thumbnails(client: Client) -> None:
    bad = await client.upload("fake.jpg", b"GIF89a" + b"\x00" * 64)
    image_id = bad.json()["image_id"]

    answer = await client.http.get(f"/api/images/{image_id}/thumbnails/small")

    assert_problem(answer, 404, "image.thumbnail_not_ready")


async def test_same_bytes_twice_are_two_records_with_one_sha256(client: Client) -> None:
    data = photo(500)
    one = (await client.upload("a.jpg", data)).json()
    two = (await client.upload("b.jpg", data)).json()

    assert one["id"] != two["id"]
    assert one["sha256"] == two["sha256"]
    assert (one["original_name"], two["original_name"]) == ("a.jpg", "b.jpg")


# --- stats -----------------------------------------------------------------------------------


async def test_stats_before_anything_finished(client: Client) -> None:
    stats = await client.get("/api/stats")

    assert (stats["total"], stats["failed"]) == (0, 0)
    assert stats["success_rate"] is None
    assert stats["average_processing_time_seconds"] is None


async def test_stats_count_failures(client: Client) -> None:
    # imgapi's example: four uploads, one failed, "75.00%" (here the fraction 0.75).
    ids = [(await client.upload(f"p{n}.jpg", photo(200 + n * 10))).json()["id"] for n in range(3)]
    bad = await client.upload("fake.jpg", b"GIF89a" + b"\x00" * 64)
    assert bad.status_code == 422
    for image_id in ids:
        assert (await client.wait_ready(image_id))["status"] == "ready"

    stats = await client.get("/api/stats")

    assert (stats["total"], stats["failed"]) == (4, 1)
    assert stats["success_rate"] == pytest.approx(0.75)
    assert {k: n for k, n in stats["by_status"].items() if n} == {"ready": 3, "failed": 1}
    assert stats["average_processing_time_seconds"] >= 0
