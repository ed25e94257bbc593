"""A signed form cannot change an accepted original: replaying it after confirm changes nothing
a user or a worker sees, on SeaweedFS (real S3 POST-policy enforcement) and the local backend.
Readers check the stored bytes against the record."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from sqlalchemy import select

from backend.images.models import Blob, Upload
from tests.auth.test_router import assert_problem
from tests.images import test_router as router_tests
from tests.images.test_router import Stack, User, jpeg, post_form, presign, wait_ready

# The same app-on-both-backends fixtures as the router tests (SeaweedFS and the local folder).
stack = router_tests.stack
storage_url = router_tests.storage_url
users = router_tests.users

HTML = b"<html><script>alert(1)</script></html>"


async def fetch(stack: Stack, user: User, path: str) -> bytes:
    """GET an API path, following its redirect to storage the way a browser does."""
    answer = await user.client.get(path)
    if answer.status_code == 307:
        async with stack.storage_client() as c:
            answer = await c.get(answer.headers["location"])
    assert answer.status_code == 200, answer.text
    return answer.content


async def sketch_of(user: User, image_id: str) -> dict[str, Any]:
    created = await user.client.post(
        "/api/sketch/create",
        json={"image_id": image_id, "style": "pencil", "method": "basic"},
        headers=user.csrf,
    )
    assert created.status_code == 202, created.text
    sketch_id = created.json()["sketch"]["id"]
    deadline = time.monotonic() + 30
    while True:
        sketch: dict[str, Any] = (await user.client.get(f"/api/sketch/{sketch_id}")).json()
        if sketch["status"] in ("ready", "failed") or time.monotonic() > deadline:
            return sketch
        await asyncio.sleep(0.1)


async def task_of(user: User, sketch: dict[str, Any]) -> dict[str, Any]:
    answer = await user.client.get(f"/api/sketch/task/{sketch['task_id']}")
    body: dict[str, Any] = answer.json()
    return body


async def test_replaying_a_form_after_confirm_changes_nothing(
    stack: Stack, users: list[User]
) -> None:
    alice = users[0]
    data = jpeg(1200, 900)
    signed = await presign(alice, "photo.jpg", "image/jpeg", len(data))
    form = signed.json()
    assert form["fields"]["key"].startswith("staging/")
    assert (await post_form(stack, form, data)).status_code in (200, 201, 204)
    confirmed = await alice.client.post(
        "/api/upload/confirm", json={"upload_id": form["upload_id"]}, headers=alice.csrf
    )
    assert confirmed.status_code == 201, confirmed.text
    image = await wait_ready(alice, confirmed.json()["id"])
    assert image["status"] == "ready", image
    base = f"/api/images/{image['id']}"
    download = await fetch(stack, alice, f"{base}/download")
    assert download == data
    small = await fetch(stack, alice, f"{base}/thumbnails/small")
    first_sketch = await sketch_of(alice, image["id"])
    assert first_sketch["status"] == "ready", first_sketch
    drawn = await fetch(stack, alice, first_sketch["result_url"])

    async with stack.resources.db.sessionmaker() as session:
        blob = await session.scalar(select(Blob).where(Blob.sha256 == image["sha256"]))
        upload = await session.get(Upload, form["upload_id"])
    assert blob is not None
    assert upload is not None
    # Content-addressed, and not the key the form names.
    assert blob.storage_key.startswith("originals/")
    assert image["sha256"] in blob.storage_key
    assert blob.storage_key != form["fields"]["key"]
    assert await stack.resources.storage.head(upload.storage_key) is None  # staging removed

    # The form is still within its lifetime: replaying it with other bytes is accepted by the
    # storage (its policy allows it), but lands on the staging key only.
    for other in (HTML, jpeg(64, 64, (0, 0, 255))):
        replay = await post_form(stack, form, other)
        assert replay.status_code in (200, 201, 204), replay.text

    assert await fetch(stack, alice, f"{base}/download") == data
    assert await fetch(stack, alice, f"{base}/thumbnails/small") == small
    again = (await alice.client.get(base)).json()
    assert (again["size_bytes"], again["sha256"], again["status"]) == (
        len(data),
        hashlib.sha256(data).hexdigest(),
        "ready",
    )
    # A worker reading the original after the replay still gets the accepted bytes.
    second_sketch = await sketch_of(alice, image["id"])
    assert second_sketch["status"] == "ready", second_sketch
    assert (second_sketch["width"], second_sketch["height"]) == (1200, 900)
    assert await fetch(stack, alice, second_sketch["result_url"]) == drawn
    # Confirming the same upload again is refused; nothing is re-read from staging.
    reconfirm = await alice.client.post(
        "/api/upload/confirm", json={"upload_id": form["upload_id"]}, headers=alice.csrf
    )
    assert_problem(reconfirm, 409, "upload.already_confirmed")


async def test_a_form_cannot_be_pointed_at_an_original(stack: Stack, users: list[User]) -> None:
    alice = users[0]
    data = jpeg(320, 240)
    signed = await presign(alice, "a.jpg", "image/jpeg", len(data))
    form = signed.json()
    assert (await post_form(stack, form, data)).status_code in (200, 201, 204)
    confirmed = await alice.client.post(
        "/api/upload/confirm", json={"upload_id": form["upload_id"]}, headers=alice.csrf
    )
    assert confirmed.status_code == 201, confirmed.text
    async with stack.resources.db.sessionmaker() as session:
        blob = await session.scalar(select(Blob).where(Blob.sha256 == confirmed.json()["sha256"]))
    assert blob is not None
    # The signed policy names the staging key exactly: another key is refused by the storage.
    forged = {**form, "fields": {**form["fields"], "key": blob.storage_key}}
    refused = await post_form(stack, forged, HTML)
    assert refused.status_code in (400, 403), refused.text
    stored = await stack.resources.storage.get(blob.storage_key)
    assert stored == data


async def test_readers_refuse_an_original_that_changed_in_storage(
    stack: Stack, users: list[User]
) -> None:
    alice = users[0]
    data = jpeg(400, 300)
    signed = await presign(alice, "a.jpg", "image/jpeg", len(data))
    form = signed.json()
    assert (await post_form(stack, form, data)).status_code in (200, 201, 204)
    confirmed = await alice.client.post(
        "/api/upload/confirm", json={"upload_id": form["upload_id"]}, headers=alice.csrf
    )
    image = await wait_ready(alice, confirmed.json()["id"])
    async with stack.resources.db.sessionmaker() as session:
        blob = await session.scalar(select(Blob).where(Blob.sha256 == image["sha256"]))
    assert blob is not None
    storage = stack.resources.storage

    # Same size, other bytes (only storage itself could do this): the hash check catches it.
    flipped = bytes([data[0], data[1], *data[2:-10], *(b ^ 0xFF for b in data[-10:])])
    await storage.put(blob.storage_key, flipped, content_type="image/jpeg")
    sketch = await sketch_of(alice, image["id"])
    assert sketch["status"] == "failed"
    assert (await task_of(alice, sketch))["error_code"] == "sketch.original_changed"

    # Another size: the download refuses before handing out a URL.
    await storage.put(blob.storage_key, data + b"extra", content_type="image/jpeg")
    answer = await alice.client.get(f"/api/images/{image['id']}/download")
    assert_problem(answer, 409, "image.original_changed")
    await storage.delete(blob.storage_key)
    answer = await alice.client.get(f"/api/images/{image['id']}/download")
    assert_problem(answer, 404, "image.original_missing")
