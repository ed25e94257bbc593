"""Uploads and images over HTTP, the same cases on SeaweedFS (S3) and on the local backend.

The browser flow is exercised as a browser does it: presign, a real multipart POST of the
signed form to the storage URL, confirm. Thumbnails are made by a real worker.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image as PILImage
from redis.asyncio import Redis
from sqlalchemy import select, update

from backend.composition import AppResources
from backend.config import Settings
from backend.core.db import Database, utcnow
from backend.images.models import Blob, Upload
from backend.images.tasks import ABANDONED_AFTER
from backend.main import create_app
from backend.tasks import sweeper
from backend.tasks.worker import running_worker
from tests.auth.test_router import assert_problem
from tests.conftest import PASSWORD, client_for, unique_email
from tests.servers import S3Server

BASE = "https://testserver"


def jpeg(
    width: int = 640, height: int = 480, color: tuple[int, int, int] = (200, 80, 40), **save: Any
) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), color).save(out, "JPEG", quality=90, **save)
    return out.getvalue()


def png(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


@dataclass
class Stack:
    """An app on one storage backend with committed data and a worker, and how to reach its
    storage the way a browser would."""

    app: FastAPI
    kind: str
    resources: AppResources
    s3: S3Server | None

    def storage_client(self) -> httpx.AsyncClient:
        if self.kind == "s3":
            return httpx.AsyncClient(timeout=30)
        return client_for(self.app)


@pytest.fixture(params=["local", "s3"])
def storage_url(
    request: pytest.FixtureRequest, tmp_path: Any
) -> Iterator[tuple[str, str, S3Server | None]]:
    if request.param == "local":
        yield "local", f"file://{tmp_path / 'objects'}", None
        return
    s3: S3Server = request.getfixturevalue("s3_server")
    yield (
        "s3",
        f"s3://{s3.bucket}?endpoint_url={s3.endpoint_url}&region={s3.region}"
        f"&access_key={s3.access_key}&secret_key={s3.secret_key}",
        s3,
    )


@pytest.fixture
async def stack(
    settings: Settings,
    committed_database: Database,
    redis: Redis,
    storage_url: tuple[str, str, S3Server | None],
) -> AsyncIterator[Stack]:
    kind, url, s3 = storage_url
    app_settings = settings.model_copy(
        update={
            "storage_url": url,
            "public_base_url": BASE,
            "max_upload_bytes": 2 * 1024 * 1024,
            "max_image_pixels": 30_000_000,
        }
    )
    resources = AppResources(app_settings, db=committed_database, redis=redis)
    app = create_app(app_settings, resources=resources)
    try:
        async with running_worker(resources):
            yield Stack(app, kind, resources, s3)
    finally:
        await resources.storage.close()


@dataclass
class User:
    client: httpx.AsyncClient

    @property
    def csrf(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.client.cookies.get("csrf_token") or ""}


@pytest.fixture
async def users(stack: Stack) -> AsyncIterator[list[User]]:
    made: list[User] = []
    for _ in range(2):
        c = client_for(stack.app)
        answer = await c.post(
            "/api/auth/register", json={"email": unique_email(), "password": PASSWORD}
        )
        assert answer.status_code == 201
        made.append(User(c))
    yield made
    for user in made:
        await user.client.aclose()


async def presign(user: User, filename: str, content_type: str, size: int) -> httpx.Response:
    return await user.client.post(
        "/api/upload/presigned-url",
        json={"filename": filename, "content_type": content_type, "size_bytes": size},
        headers=user.csrf,
    )


async def post_form(
    stack: Stack, form: dict[str, Any], data: bytes, *, filename: str = "f.jpg"
) -> httpx.Response:
    async with stack.storage_client() as c:
        return await c.post(
            form["url"],
            data=form["fields"],
            files={"file": (filename, data, "application/octet-stream")},
        )


async def upload(
    stack: Stack,
    user: User,
    data: bytes,
    filename: str = "photo.jpg",
    content_type: str = "image/jpeg",
) -> httpx.Response:
    signed = await presign(user, filename, content_type, len(data))
    assert signed.status_code == 201, signed.text
    form = signed.json()
    stored = await post_form(stack, form, data, filename=filename)
    assert stored.status_code in (200, 201, 204), stored.text
    return await user.client.post(
        "/api/upload/confirm", json={"upload_id": form["upload_id"]}, headers=user.csrf
    )


async def wait_ready(user: User, image_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = (await user.client.get(f"/api/images/{image_id}")).json()
        if body["status"] != "processing" or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.1)


async def test_browser_flow_to_ready_with_thumbnails(stack: Stack, users: list[User]) -> None:
    alice = users[0]
    data = jpeg(1600, 1200)
    signed = await presign(alice, "../../etc/Holiday photo.JPG", "image/jpeg", len(data))
    form = signed.json()
    assert form["method"] == "POST"
    assert form["max_bytes"] == len(data)
    assert form["expires_at"].endswith("Z")
    stored = await post_form(stack, form, data)
    assert stored.status_code in (200, 201, 204)
    confirmed = await alice.client.post(
        "/api/upload/confirm", json={"upload_id": form["upload_id"]}, headers=alice.csrf
    )
    assert confirmed.status_code == 201, confirmed.text
    image = confirmed.json()
    assert image["status"] == "processing"
    assert image["original_name"] == "Holiday photo.jpg"
    assert (image["width"], image["height"], image["format"]) == (1600, 1200, "jpeg")
    assert image["size_bytes"] == len(data)
    assert len(image["sha256"]) == 64

    ready = await wait_ready(alice, image["id"])
    assert ready["status"] == "ready", ready
    assert ready["processed_at"] is not None
    assert ready["thumbnails"] == {
        "small": f"/api/images/{image['id']}/thumbnails/small",
        "medium": f"/api/images/{image['id']}/thumbnails/medium",
    }
    for size, long_side in (("small", 200), ("medium", 800)):
        answer = await alice.client.get(ready["thumbnails"][size])
        if stack.kind == "s3":
            assert answer.status_code == 307
            async with httpx.AsyncClient() as c:
                answer = await c.get(answer.headers["location"])
        assert answer.status_code == 200
        thumb = PILImage.open(io.BytesIO(answer.content))
        assert thumb.format == "JPEG"
        assert max(thumb.size) == long_side
        if stack.kind == "local":
            assert answer.headers["etag"]
            again = await alice.client.get(
                ready["thumbnails"][size], headers={"If-None-Match": answer.headers["etag"]}
            )
            assert again.status_code == 304

    download = await alice.client.get(f"/api/images/{image['id']}/download")
    assert download.status_code == 307
    async with stack.storage_client() as c:
        original = await c.get(download.headers["location"])
    assert original.status_code == 200
    assert original.content == data
    assert "attachment" in original.headers["content-disposition"]


async def test_direct_multipart_upload(users: list[User]) -> None:
    alice = users[0]
    answer = await alice.client.post(
        "/api/images", files={"file": ("tiny.png", png(), "image/png")}, headers=alice.csrf
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["format"], body["width"], body["height"]) == ("png", 64, 48)
    ready = await wait_ready(alice, body["id"])
    assert ready["status"] == "ready"

    missing = await alice.client.post(
        "/api/images", files={"other": ("x.png", png(), "image/png")}, headers=alice.csrf
    )
    assert_problem(missing, 422, "upload.missing_file")
    huge = await alice.client.post(
        "/api/images",
        files={"file": ("big.jpg", b"\xff" * (3 * 1024 * 1024), "image/jpeg")},
        headers=alice.csrf,
    )
    assert_problem(huge, 413, "upload.too_large")
    wrong = await alice.client.post(
        "/api/images", files={"file": ("photo.jpg", png(), "image/jpeg")}, headers=alice.csrf
    )
    body = assert_problem(wrong, 422, "upload.magic_mismatch")
    assert body["image_id"]


async def test_same_bytes_share_storage_but_are_two_records(
    stack: Stack, users: list[User]
) -> None:
    alice = users[0]
    data = jpeg(300, 200)
    first = (await upload(stack, alice, data, "a.jpg")).json()
    await wait_ready(alice, first["id"])
    second = (await upload(stack, alice, data, "b.jpg")).json()
    assert second["id"] != first["id"]
    assert second["sha256"] == first["sha256"]
    # The second needs no new thumbnails: it is ready at once.
    assert second["status"] == "ready"
    assert second["original_name"] == "b.jpg"

    # Deleting one record keeps the shared bytes for the other.
    assert (
        await alice.client.delete(f"/api/images/{first['id']}", headers=alice.csrf)
    ).status_code == 204
    assert_problem(await alice.client.get(f"/api/images/{first['id']}"), 404, "image.not_found")
    still = await alice.client.get(f"/api/images/{second['id']}/download")
    async with stack.storage_client() as c:
        assert (await c.get(still.headers["location"])).content == data
    storage = stack.resources.storage
    async with stack.resources.db.sessionmaker() as session:
        blob = (await session.execute(select(Blob))).scalars().one()
        keys = [blob.storage_key, *(blob.thumbnails or {}).values()]
    assert all([await storage.head(k) for k in keys])
    assert (
        await alice.client.delete(f"/api/images/{second['id']}", headers=alice.csrf)
    ).status_code == 204
    assert [await storage.head(k) for k in keys] == [None] * len(keys)


@pytest.mark.parametrize(
    ("filename", "content_type", "size", "code"),
    [
        ("a.jpg", "image/jpeg", 0, "upload.empty"),
        ("a.jpg", "image/jpeg", 3 * 1024 * 1024, "upload.too_large"),
        ("a.svg", "image/svg+xml", 100, "upload.unsupported_type"),
        (
            "a.xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            100,
            "upload.unsupported_type",
        ),
        ("a.png", "image/jpeg", 100, "upload.type_mismatch"),
    ],
)
async def test_presign_refuses_before_signing(
    users: list[User], filename: str, content_type: str, size: int, code: str
) -> None:
    assert_problem(await presign(users[0], filename, content_type, size), 422, code)


async def test_invalid_files_become_failed_records(stack: Stack, users: list[User]) -> None:
    alice = users[0]
    good = jpeg(200, 100)
    cases = {
        "upload.magic_mismatch": (png(), "photo.jpg", "image/jpeg"),
        "upload.unrecognized": (b"PK\x03\x04" + b"\x00" * 200, "sheet.jpg", "image/jpeg"),
        "upload.corrupt": (good[: len(good) // 2], "cut.jpg", "image/jpeg"),
        "upload.trailing_data": (
            good + b"PK\x03\x04" + b"\x01" * 300,
            "polyglot.jpg",
            "image/jpeg",
        ),
    }
    failed_ids = []
    for code, (data, name, ctype) in cases.items():
        answer = await upload(stack, alice, data, name, ctype)
        body = assert_problem(answer, 422, code)
        image_id = str(body["image_id"])
        failed_ids.append(image_id)
        record = (await alice.client.get(f"/api/images/{image_id}")).json()
        assert record["status"] == "failed"
        assert record["error_code"] == code
        assert record["error"]
    stats = (await alice.client.get("/api/stats")).json()
    assert stats["failed"] == len(cases)
    assert stats["total"] == len(cases)
    assert stats["by_status"]["failed"] == len(cases)
    assert stats["success_rate"] == 0.0
    # Invalid objects do not stay in storage.
    async with stack.resources.db.sessionmaker() as session:
        keys = [u.storage_key for u in (await session.execute(select(Upload))).scalars()]
    assert keys
    assert [await stack.resources.storage.head(k) for k in keys] == [None] * len(keys)


async def test_confirm_edge_cases(stack: Stack, users: list[User]) -> None:
    alice, bob = users
    never = (await presign(alice, "a.jpg", "image/jpeg", 1000)).json()
    assert_problem(
        await alice.client.post(
            "/api/upload/confirm", json={"upload_id": never["upload_id"]}, headers=alice.csrf
        ),
        409,
        "upload.not_received",
    )
    data = jpeg(120, 90)
    signed = (await presign(alice, "b.jpg", "image/jpeg", len(data))).json()
    await post_form(stack, signed, data)
    foreign = await bob.client.post(
        "/api/upload/confirm", json={"upload_id": signed["upload_id"]}, headers=bob.csrf
    )
    missing = await bob.client.post(
        "/api/upload/confirm", json={"upload_id": str(uuid.uuid4())}, headers=bob.csrf
    )
    assert assert_problem(foreign, 404, "upload.not_found") == assert_problem(
        missing, 404, "upload.not_found"
    )
    ok = await alice.client.post(
        "/api/upload/confirm", json={"upload_id": signed["upload_id"]}, headers=alice.csrf
    )
    assert ok.status_code == 201
    twice = await alice.client.post(
        "/api/upload/confirm", json={"upload_id": signed["upload_id"]}, headers=alice.csrf
    )
    assert_problem(twice, 409, "upload.already_confirmed")


async def test_presigned_post_rules_are_enforced_by_storage(
    stack: Stack, users: list[User]
) -> None:
    alice = users[0]
    data = jpeg(100, 100)
    form = (await presign(alice, "p.jpg", "image/jpeg", len(data))).json()
    too_big = await post_form(stack, form, data + b"\x00" * 100)
    assert too_big.status_code in (400, 403), too_big.text
    other_type = {**form, "fields": {**form["fields"], "Content-Type": "text/html"}}
    assert (await post_form(stack, other_type, data)).status_code == 403
    other_key = {**form, "fields": {**form["fields"], "key": form["fields"]["key"] + "x"}}
    assert (await post_form(stack, other_key, data)).status_code == 403
    # None of those stored anything: confirm still finds nothing.
    assert_problem(
        await alice.client.post(
            "/api/upload/confirm", json={"upload_id": form["upload_id"]}, headers=alice.csrf
        ),
        409,
        "upload.not_received",
    )


async def test_other_users_images_are_404_everywhere(stack: Stack, users: list[User]) -> None:
    alice, bob = users
    image = (await upload(stack, alice, jpeg(150, 150))).json()
    await wait_ready(alice, image["id"])
    base = f"/api/images/{image['id']}"
    for method, path in (
        ("GET", base),
        ("GET", f"{base}/thumbnails/small"),
        ("GET", f"{base}/download"),
        ("DELETE", base),
    ):
        answer = await bob.client.request(method, path, headers=bob.csrf)
        assert_problem(answer, 404, "image.not_found")
    assert (await bob.client.get("/api/images")).json()["items"] == []
    assert (await bob.client.get("/api/stats")).json()["total"] == 0
    assert_problem(
        await bob.client.get("/api/stats", params={"scope": "all"}), 403, "auth.admin_required"
    )
    assert_problem(await alice.client.get(f"{base}/thumbnails/huge"), 422, "request.validation")
    # Alice still has it.
    assert (await alice.client.get(base)).status_code == 200


async def test_list_filter_and_stats(stack: Stack, users: list[User]) -> None:
    alice = users[0]
    ok = (await upload(stack, alice, jpeg(100, 80))).json()
    await upload(stack, alice, png(), "x.jpg", "image/jpeg")
    await wait_ready(alice, ok["id"])
    listed = (await alice.client.get("/api/images")).json()
    assert len(listed["items"]) == 2
    assert [
        i["status"]
        for i in (await alice.client.get("/api/images", params={"status": "failed"})).json()[
            "items"
        ]
    ] == ["failed"]
    stats = (await alice.client.get("/api/stats")).json()
    assert stats["total"] == 2
    assert stats["failed"] == 1
    assert stats["success_rate"] == 0.5
    assert stats["by_status"] == {"processing": 0, "ready": 1, "failed": 1}
    assert stats["average_processing_time_seconds"] >= 0


async def test_uploads_are_rate_limited_per_user(make_app: Any, sign_up: Any) -> None:
    app = make_app(upload_rate_per_minute=2)
    user = await sign_up("busy", on=app)
    other = await sign_up("calm", on=app)
    body = {"filename": "a.jpg", "content_type": "image/jpeg", "size_bytes": 1000}
    for _ in range(2):
        ok = await user.client.post("/api/upload/presigned-url", json=body, headers=user.csrf)
        assert ok.status_code == 201
    refused = await user.client.post("/api/upload/presigned-url", json=body, headers=user.csrf)
    assert_problem(refused, 429, "upload.rate_limited")
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    direct = await user.client.post(
        "/api/images", files={"file": ("a.png", png(), "image/png")}, headers=user.csrf
    )
    assert_problem(direct, 429, "upload.rate_limited")
    # Another user has an allowance of their own.
    assert (
        await other.client.post("/api/upload/presigned-url", json=body, headers=other.csrf)
    ).status_code == 201


async def test_abandoned_uploads_are_swept(stack: Stack, users: list[User]) -> None:
    """An upload form posted but never confirmed, a day past its expiry: the sweeper's chore
    removes its staging object and its row. Recent or confirmed uploads stay."""
    alice, _ = users
    data = jpeg(120, 90)
    abandoned = (await presign(alice, "a.jpg", "image/jpeg", len(data))).json()
    recent = (await presign(alice, "b.jpg", "image/jpeg", len(data))).json()
    confirmed = (await presign(alice, "c.jpg", "image/jpeg", len(data))).json()
    for form in (abandoned, recent, confirmed):
        assert (await post_form(stack, form, data)).status_code in (201, 204)
    answer = await alice.client.post(
        "/api/upload/confirm", json={"upload_id": confirmed["upload_id"]}, headers=alice.csrf
    )
    assert answer.status_code == 201
    db = stack.resources.db
    old = utcnow() - ABANDONED_AFTER - timedelta(minutes=1)
    async with db.sessionmaker() as session:
        await session.execute(
            update(Upload)
            .where(
                Upload.id.in_(
                    [uuid.UUID(abandoned["upload_id"]), uuid.UUID(confirmed["upload_id"])]
                )
            )
            .values(expires_at=old)
        )
        await session.commit()
        keys = {
            row.id: row.storage_key
            for row in await session.scalars(
                select(Upload).where(Upload.id == uuid.UUID(recent["upload_id"]))
            )
        }
    abandoned_key = (
        f"staging/{(await alice.client.get('/api/auth/me')).json()['id']}/{abandoned['upload_id']}"
    )
    assert await stack.resources.storage.head(abandoned_key) is not None

    assert await sweeper.run_chores(stack.resources) == {"sweep_abandoned_uploads": 1}
    assert await stack.resources.storage.head(abandoned_key) is None
    async with db.sessionmaker() as session:
        left = set(await session.scalars(select(Upload.id)))
    assert uuid.UUID(abandoned["upload_id"]) not in left
    assert {uuid.UUID(recent["upload_id"]), uuid.UUID(confirmed["upload_id"])} <= left
    assert await stack.resources.storage.head(next(iter(keys.values()))) is not None
    late = await alice.client.post(
        "/api/upload/confirm", json={"upload_id": abandoned["upload_id"]}, headers=alice.csrf
    )
    assert_problem(late, 404, "upload.not_found")
