"""Every refused upload is recorded (seed 001): presign refusals, direct-upload refusals and
confirm refusals each leave a `failed` image, named in the problem's `image_id`, listed under
`status=failed` and counted by the stats."""

from __future__ import annotations

import io
from typing import Any

import httpx
from PIL import Image as PILImage

from tests.auth.test_router import assert_problem
from tests.conftest import AppFactory, SignedIn, SignUp


def png() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (32, 24), (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


async def recorded(
    alice: SignedIn, answer: httpx.Response, status: int, code: str, name: str
) -> dict[str, Any]:
    problem = assert_problem(answer, status, code)
    image_id = problem["image_id"]
    image: dict[str, Any] = (await alice.client.get(f"/api/images/{image_id}")).json()
    assert image["status"] == "failed"
    assert (image["original_name"], image["error_code"]) == (name, code)
    assert image["error"]
    return image


async def presign(alice: SignedIn, filename: str, content_type: str, size: int) -> httpx.Response:
    return await alice.client.post(
        "/api/upload/presigned-url",
        json={"filename": filename, "content_type": content_type, "size_bytes": size},
        headers=alice.csrf,
    )


async def test_presign_refusals_are_recorded(alice: SignedIn) -> None:
    xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    cases = [
        (await presign(alice, "file.xlsx", xlsx, 1000), "upload.unsupported_type", "file.xlsx"),
        (await presign(alice, "a.png", "image/jpeg", 1000), "upload.type_mismatch", "a.png"),
        (await presign(alice, "/../..", "image/png", 1000), "upload.bad_filename", "unnamed"),
        (await presign(alice, "empty.png", "image/png", 0), "upload.empty", "empty.png"),
        (
            await presign(alice, "huge.png", "image/png", 10**12),
            "upload.too_large",
            "huge.png",
        ),
    ]
    ids = {(await recorded(alice, a, 422, code, name))["id"] for a, code, name in cases}
    assert len(ids) == len(cases)

    failed = (await alice.client.get("/api/images", params={"status": "failed"})).json()
    assert {item["id"] for item in failed["items"]} == ids
    stats = (await alice.client.get("/api/stats")).json()
    assert stats["failed"] == len(cases)
    assert stats["total"] == len(cases)
    assert stats["by_status"]["failed"] == len(cases)


async def test_direct_upload_refusals_are_recorded(make_app: AppFactory, sign_up: SignUp) -> None:
    # 1 MiB uploads: a 2 MiB request is within the app-wide multipart bound (the CSV limit),
    # so the endpoint's own size check is what refuses it.
    alice = await sign_up("alice", on=make_app(max_upload_bytes=1024 * 1024))

    async def direct(name: str, data: bytes, content_type: str) -> httpx.Response:
        return await alice.client.post(
            "/api/images", files={"file": (name, data, content_type)}, headers=alice.csrf
        )

    await recorded(
        alice, await direct("file.xlsx", b"PK\x03\x04", "application/zip"),
        422, "upload.unsupported_type", "file.xlsx",
    )  # fmt: skip
    await recorded(
        alice, await direct("empty.png", b"", "image/png"), 422, "upload.empty", "empty.png"
    )
    await recorded(
        alice, await direct("fake.png", b"<html></html>", "image/png"),
        422, "upload.unrecognized", "fake.png",
    )  # fmt: skip
    # Over the limit by Content-Length: refused unread (413), recorded all the same.
    big = await alice.client.post(
        "/api/images",
        content=b"x" * 64,
        headers={
            **alice.csrf,
            "Content-Type": "multipart/form-data; boundary=x",
            "Content-Length": str(2 * 1024 * 1024),
        },
    )
    await recorded(alice, big, 413, "upload.too_large", "unnamed")
    over = await direct("over.png", b"\x89PNG" + b"\x00" * (1024 * 1024), "image/png")
    await recorded(alice, over, 413, "upload.too_large", "over.png")
    ok = await direct("fine.png", png(), "image/png")
    assert ok.status_code == 201, ok.text

    stats = (await alice.client.get("/api/stats")).json()
    assert stats["by_status"]["failed"] == 5
    assert stats["total"] == stats["by_status"]["failed"] + 1
