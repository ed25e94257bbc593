"""What only the local backend has: key rules on the filesystem, and the app's storage routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from backend.storage.base import (
    InvalidKey,
    StorageError,
    content_disposition,
    open_storage,
)
from backend.storage.local import LocalStorage
from backend.storage.router import CONTENT_LENGTH_SLACK
from backend.storage.s3 import S3Storage
from tests.storage import PUBLIC_BASE_URL, SECRET, app_serving

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 56


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage", secret=SECRET, public_base_url=PUBLIC_BASE_URL)


@pytest.fixture
def app(storage: LocalStorage) -> FastAPI:
    return app_serving(storage)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=PUBLIC_BASE_URL
    ) as client:
        yield client


def assert_problem(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == code


def staged_files(storage: LocalStorage) -> list[Path]:
    return list(storage.tmp.glob("*")) if storage.tmp.exists() else []


BAD_KEYS = ["../x", "/abs", "a//b", "a/./b", "a/../b", "..", "", "x/", "a b", "a\\b", "é.png"]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_are_refused_everywhere(storage: LocalStorage, key: str) -> None:
    operations: list[Callable[[], Awaitable[object]]] = [
        lambda: storage.put(key, b"x", content_type="text/plain"),
        lambda: storage.get(key),
        lambda: storage.head(key),
        lambda: storage.delete(key),
        lambda: storage.delete_many(["fine", key]),
        lambda: storage.presign_post(key, content_type="image/png", max_bytes=1, expires_in=60),
        lambda: storage.presign_get(key, expires_in=60),
    ]
    for operation in operations:
        with pytest.raises(InvalidKey):
            await operation()
    assert issubclass(InvalidKey, StorageError)
    assert not (storage.root.parent / "x").exists()


async def test_a_symlink_cannot_lead_outside_the_root(
    storage: LocalStorage, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("do not serve")
    storage.objects.mkdir(parents=True)
    (storage.objects / "link").symlink_to(outside)
    with pytest.raises(InvalidKey):
        await storage.get("link/secret.txt")
    with pytest.raises(InvalidKey):
        await storage.put("link/new.txt", b"x", content_type="text/plain")
    assert not (outside / "new.txt").exists()


async def test_a_symlink_deeper_down_or_in_place_of_the_folder_is_caught(
    storage: LocalStorage, tmp_path: Path
) -> None:
    """Only the folder and what lies below it are looked at (the root was resolved once):
    a link at any of those levels, planted after start, must still be caught."""
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "secret.txt").write_text("do not serve")
    await storage.put("users/u1/a.txt", b"a", content_type="text/plain")
    (storage.objects / "users" / "u2").symlink_to(outside / "deep")
    with pytest.raises(InvalidKey):
        await storage.get("users/u2/secret.txt")
    # The objects folder itself swapped for a link.
    storage.objects.rename(tmp_path / "moved")
    storage.objects.symlink_to(outside)
    with pytest.raises(InvalidKey):
        await storage.get("deep/secret.txt")
    with pytest.raises(InvalidKey):
        await storage.put("deep/new.txt", b"x", content_type="text/plain")
    assert not (outside / "deep" / "new.txt").exists()


async def test_a_symlink_that_stays_inside_is_followed(storage: LocalStorage) -> None:
    await storage.put("real/a.txt", b"a", content_type="text/plain")
    (storage.objects / "alias").symlink_to(storage.objects / "real")
    assert await storage.get("alias/a.txt") == b"a"


async def test_objects_and_sidecars_never_collide(storage: LocalStorage) -> None:
    # A key that looks like another key's metadata stays an ordinary, separate object.
    await storage.put("a", b"1", content_type="text/plain")
    await storage.put("a.json", b"2", content_type="application/json")
    assert await storage.get("a") == b"1"
    info = await storage.head("a")
    assert info is not None
    assert info.content_type == "text/plain"


async def test_a_key_under_an_object_is_missing_not_an_error(storage: LocalStorage) -> None:
    await storage.put("file", b"1", content_type="text/plain")
    assert await storage.head("file/inner") is None
    await storage.delete("file/inner")


async def test_writes_leave_nothing_staged(storage: LocalStorage) -> None:
    await storage.put("k", b"data", content_type="text/plain")
    await storage.put("k", b"more", content_type="text/plain")
    assert staged_files(storage) == []


async def test_signing_needs_the_app_secret(tmp_path: Path) -> None:
    unsigned = LocalStorage(tmp_path)
    with pytest.raises(StorageError, match="secret"):
        await unsigned.presign_get("k", expires_in=60)
    with pytest.raises(StorageError, match="secret"):
        await unsigned.presign_post("k", content_type="image/png", max_bytes=1, expires_in=60)


async def test_urls_are_path_absolute_without_a_public_base_url(tmp_path: Path) -> None:
    relative = LocalStorage(tmp_path, secret=SECRET)
    post = await relative.presign_post("k", content_type="image/png", max_bytes=1, expires_in=60)
    assert post.url == "/api/storage/upload"
    assert (await relative.presign_get("k/x.png", expires_in=60)).startswith(
        "/api/storage/objects/k/x.png?expires="
    )


def test_open_storage_passes_the_signing_settings(tmp_path: Path) -> None:
    local = open_storage(f"file://{tmp_path}", secret=SECRET, public_base_url="http://h:1/")
    assert isinstance(local, LocalStorage)
    assert (local.root, local.public_base_url) == (tmp_path.resolve(), "http://h:1")
    s3 = open_storage("s3://bucket?endpoint_url=http://127.0.0.1:9&region=eu-west-1")
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.region, s3.kind) == ("bucket", "eu-west-1", "s3")
    with pytest.raises(StorageError):
        open_storage("s3://?region=x")
    with pytest.raises(StorageError):
        open_storage("ftp://x")


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("photo.png", 'attachment; filename="photo.png"'),
        ("my photo (1).jpg", 'attachment; filename="my photo (1).jpg"'),
        ("../../etc/passwd", 'attachment; filename=".._.._etc_passwd"'),
        ("日本.png", "attachment; filename=\"__.png\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.png"),
        (
            "a\r\nX-Evil: 1",
            "attachment; filename=\"a__X-Evil_ 1\"; filename*=UTF-8''a%0D%0AX-Evil%3A%201",
        ),
        ("", 'attachment; filename="download"'),
    ],
)
def test_content_disposition(name: str, header: str) -> None:
    assert content_disposition(name) == header


# -- the upload route ---------------------------------------------------------------------------


async def test_upload_refuses_early_on_a_large_content_length(
    storage: LocalStorage, http: httpx.AsyncClient
) -> None:
    post = await storage.presign_post(
        "big.png", content_type="image/png", max_bytes=1000, expires_in=60
    )
    request = http.build_request(
        "POST", post.url, data=post.fields, files={"file": ("a.png", b"x" * 1000, "image/png")}
    )
    head = request.read()
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        # The honest form, then a promise of far more file than the policy allows.
        yield head[: head.index(b"x" * 1000)]
        for _ in range(100):
            sent.append(1)
            yield b"x" * 65536

    declared = len(head) + 100 * 65536
    assert declared > 1000 + CONTENT_LENGTH_SLACK
    answer = await http.post(
        post.url,
        content=body(),
        headers={
            "Content-Type": request.headers["Content-Type"],
            "Content-Length": str(declared),
        },
    )
    assert_problem(answer, 400, "storage.size_out_of_range")
    assert len(sent) <= 1  # refused before the file was read
    assert await storage.head("big.png") is None
    assert staged_files(storage) == []


async def test_upload_counts_a_streamed_file_without_content_length(
    storage: LocalStorage, http: httpx.AsyncClient
) -> None:
    post = await storage.presign_post(
        "stream.png", content_type="image/png", max_bytes=100_000, expires_in=60
    )
    request = http.build_request(
        "POST", post.url, data=post.fields, files={"file": ("a.png", b"\x00", "image/png")}
    )
    form = request.read()
    start = form.index(b"\x00\r\n--")
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        yield form[:start]
        for _ in range(50):
            sent.append(1)
            yield b"x" * 8192
        yield form[start + 1 :]

    answer = await http.post(
        post.url, content=body(), headers={"Content-Type": request.headers["Content-Type"]}
    )
    assert "content-length" not in {k.lower() for k in answer.request.headers}
    assert_problem(answer, 400, "storage.size_out_of_range")
    # 100 000 bytes are 13 chunks of 8 KiB: the rest was never read.
    assert len(sent) < 20
    assert await storage.head("stream.png") is None
    assert staged_files(storage) == []


async def test_upload_ignores_parts_after_the_file(
    storage: LocalStorage, http: httpx.AsyncClient
) -> None:
    post = await storage.presign_post(
        "after.png", content_type="image/png", max_bytes=100, expires_in=60
    )
    request = http.build_request(
        "POST", post.url, data=post.fields, files={"file": ("a.png", PNG, "image/png")}
    )
    boundary = request.headers["Content-Type"].split("boundary=")[1].encode()
    form = request.read()
    closing = b"--" + boundary + b"--\r\n"
    trailer = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="Content-Type"\r\n\r\n'
        b"text/html\r\n" + closing
    )
    body = form[: -len(closing)] + trailer
    answer = await http.post(
        post.url, content=body, headers={"Content-Type": request.headers["Content-Type"]}
    )
    assert answer.status_code == 204, answer.text
    info = await storage.head("after.png")
    assert info is not None
    assert info.content_type == "image/png"


async def test_upload_refuses_a_truncated_body(
    storage: LocalStorage, http: httpx.AsyncClient
) -> None:
    post = await storage.presign_post(
        "cut.png", content_type="image/png", max_bytes=100, expires_in=60
    )
    request = http.build_request(
        "POST", post.url, data=post.fields, files={"file": ("a.png", PNG, "image/png")}
    )
    form = request.read()
    answer = await http.post(
        post.url,
        content=form[: form.index(PNG) + 10],
        headers={"Content-Type": request.headers["Content-Type"]},
    )
    assert_problem(answer, 400, "storage.malformed")
    assert await storage.head("cut.png") is None
    assert staged_files(storage) == []


async def test_upload_refuses_duplicate_fields(
    storage: LocalStorage, http: httpx.AsyncClient
) -> None:
    post = await storage.presign_post(
        "dup.png", content_type="image/png", max_bytes=100, expires_in=60
    )
    data = {**post.fields, "key": [post.fields["key"], "other.png"]}
    answer = await http.post(post.url, data=data, files={"file": ("a.png", PNG, "image/png")})
    assert_problem(answer, 400, "storage.malformed")
    assert await storage.head("dup.png") is None


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"key=a", "application/x-www-form-urlencoded"),
        (b"not a form", "multipart/form-data"),
        (b"garbage without boundary", "multipart/form-data; boundary=abc"),
        (b"--abc\r\n\r\nvalue\r\n--abc--\r\n", "multipart/form-data; boundary=abc"),
    ],
)
async def test_upload_refuses_what_is_not_an_upload_form(
    http: httpx.AsyncClient, content: bytes, content_type: str
) -> None:
    answer = await http.post(
        "/api/storage/upload", content=content, headers={"Content-Type": content_type}
    )
    assert_problem(answer, 400, "storage.malformed")


async def test_upload_refuses_oversized_fields(
    storage: LocalStorage, http: httpx.AsyncClient
) -> None:
    post = await storage.presign_post(
        "f.png", content_type="image/png", max_bytes=100, expires_in=60
    )
    fields = post.fields | {"x-padding": "p" * 100_000}
    answer = await http.post(post.url, data=fields, files={"file": ("a.png", PNG, "image/png")})
    assert_problem(answer, 400, "storage.malformed")


# -- the download route -------------------------------------------------------------------------


async def test_download_headers_and_conditional_requests(
    storage: LocalStorage, http: httpx.AsyncClient
) -> None:
    await storage.put("img/a.png", PNG, content_type="image/png")
    url = await storage.presign_get("img/a.png", expires_in=120)
    first = await http.get(url)
    assert first.status_code == 200
    etag = first.headers["etag"]
    cache = first.headers["cache-control"]
    assert cache.startswith("private, max-age=")
    assert 110 <= int(cache.rsplit("=", 1)[1]) <= 120
    assert first.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in first.headers["content-security-policy"]

    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await http.get(url, headers={"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == etag
    changed = await http.get(url, headers={"If-None-Match": '"other"'})
    assert changed.status_code == 200
    assert changed.content == PNG

    head = await http.head(url)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(PNG))
    assert head.content == b""

    ranged = await http.get(url, headers={"Range": "bytes=0-7"})
    assert ranged.status_code == 206
    assert ranged.content == PNG[:8]


async def test_download_of_a_missing_object(storage: LocalStorage, http: httpx.AsyncClient) -> None:
    url = await storage.presign_get("gone.png", expires_in=60)
    assert_problem(await http.get(url), 404, "storage.not_found")


async def test_download_needs_a_signature(storage: LocalStorage, http: httpx.AsyncClient) -> None:
    await storage.put("a.png", PNG, content_type="image/png")
    for query in ("", "?expires=9999999999", "?expires=soon&signature=abc", "?signature=abc"):
        answer = await http.get(f"/api/storage/objects/a.png{query}")
        assert_problem(answer, 403, "storage.signature_invalid")
    # A signature for one key opens no other.
    url = await storage.presign_get("a.png", expires_in=60)
    await storage.put("b.png", PNG, content_type="image/png")
    assert_problem(await http.get(url.replace("a.png", "b.png")), 403, "storage.signature_invalid")


async def test_expiry_is_checked_after_the_signature(storage: LocalStorage) -> None:
    url = await storage.presign_get("a.png", expires_in=60)
    query: dict[str, Any] = dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&"))
    later = int(query["expires"]) + 1
    with pytest.raises(StorageError, match="expired"):
        storage.verify_get(
            "a.png",
            expires=query["expires"],
            signature=query["signature"],
            filename=None,
            content_type=None,
            now=later,
        )


async def test_routes_answer_404_when_storage_is_s3() -> None:
    s3 = S3Storage(bucket="b", endpoint_url="http://127.0.0.1:9", access_key="a", secret_key="s")
    app = app_serving(s3)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=PUBLIC_BASE_URL
    ) as client:
        answer = await client.post("/api/storage/upload", files={"file": ("a", b"x", "image/png")})
        assert_problem(answer, 404, "storage.not_local")
        answer = await client.get("/api/storage/objects/a.png?expires=1&signature=x")
        assert_problem(answer, 404, "storage.not_local")
    await s3.close()
