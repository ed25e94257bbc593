"""The same contract, checked against both backends: the local folder and S3 (SeaweedFS).

Uploads and downloads go over real HTTP the way a browser does them: to SeaweedFS for S3, and
through the app's own storage routes for the local backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from backend.storage.base import (
    ObjectNotFound,
    ObjectTooLarge,
    PresignedPost,
    Storage,
    open_storage,
)
from backend.storage.local import LocalStorage
from tests.servers import S3Server
from tests.storage import PUBLIC_BASE_URL, SECRET, app_serving

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 56  # 64 bytes; the bytes themselves are never decoded


@dataclass
class Backend:
    name: str
    storage: Storage
    http: httpx.AsyncClient
    prefix: str

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def assert_refused(
        self, answer: httpx.Response, status: int, *, local: str, s3: str, s3_message: str = ""
    ) -> None:
        """Both backends answer with the same status; the bodies name the rule in their way."""
        assert answer.status_code == status, answer.text
        if self.name == "local":
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["code"] == local
        else:
            assert f"<Code>{s3}</Code>" in answer.text
            assert s3_message in answer.text


@pytest.fixture(params=["local", "s3"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    storage: Storage
    if request.param == "s3":
        s: S3Server = request.getfixturevalue("s3_server")
        storage = open_storage(
            f"s3://{s.bucket}?endpoint_url={s.endpoint_url}&region={s.region}"
            f"&access_key={s.access_key}&secret_key={s.secret_key}"
        )
        http = httpx.AsyncClient(timeout=10)
    else:
        storage = open_storage(
            f"file://{tmp_path / 'storage'}", secret=SECRET, public_base_url=PUBLIC_BASE_URL
        )
        assert isinstance(storage, LocalStorage)
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app_serving(storage)), base_url=PUBLIC_BASE_URL
        )
    async with http:
        yield Backend(request.param, storage, http, prefix)
    await storage.close()


async def browser_post(
    backend: Backend,
    post: PresignedPost,
    body: bytes = PNG,
    *,
    fields: dict[str, str] | None = None,
) -> httpx.Response:
    # What a browser's FormData does: the fields in order, the file last, its own type ignored.
    return await backend.http.post(
        post.url,
        data=post.fields if fields is None else fields,
        files={"file": ("holiday photo.png", body, "application/octet-stream")},
    )


def signature_field(fields: dict[str, str]) -> str:
    return next(name for name in fields if name.lower().endswith("signature"))


def tampered(value: str) -> str:
    return value[:-1] + ("0" if value[-1] != "0" else "1")


def with_query(url: str, **changes: str) -> str:
    """``url`` with query parameters replaced; ``signature`` means whichever the backend uses."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for name, value in changes.items():
        if name == "signature":
            name = next(k for k in query if k.lower().endswith("signature"))
        query[name] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def signature_of(url: str) -> str:
    query = dict(parse_qsl(urlsplit(url).query))
    return next(v for k, v in query.items() if k.lower().endswith("signature"))


async def presign(
    backend: Backend, key: str, *, max_bytes: int = 100, expires_in: int = 60
) -> PresignedPost:
    return await backend.storage.presign_post(
        key, content_type="image/png", max_bytes=max_bytes, expires_in=expires_in
    )


async def test_put_get_head_delete_round_trip(backend: Backend) -> None:
    storage = backend.storage
    a, b, c = backend.key("a.txt"), backend.key("dir/b.bin"), backend.key("c")
    await storage.put(a, b"hello", content_type="text/plain", cache_control="max-age=60")
    await storage.put(b, b"\x00\x01", content_type="application/octet-stream")

    info = await storage.head(a)
    assert info is not None
    assert (info.key, info.size, info.content_type) == (a, 5, "text/plain")
    # Both backends give a single-part object S3's ETag: the MD5 of its bytes, unquoted.
    assert info.etag == hashlib.md5(b"hello").hexdigest()
    assert info.cache_control == "max-age=60"
    assert await storage.get(a) == b"hello"
    assert await storage.get(a, max_bytes=5) == b"hello"

    await storage.put(a, b"replaced", content_type="text/markdown")
    assert await storage.get(a) == b"replaced"
    replaced = await storage.head(a)
    assert replaced is not None
    assert (replaced.size, replaced.content_type) == (8, "text/markdown")

    await storage.put(c, b"", content_type="application/octet-stream")
    assert await storage.get(c, max_bytes=10) == b""

    await storage.delete(a)
    assert await storage.head(a) is None
    await storage.delete(a)  # already gone: still fine

    await storage.delete_many([b, c, backend.key("never-existed")])
    assert await storage.head(b) is None
    assert await storage.head(c) is None
    await storage.delete_many([])


async def test_missing_object(backend: Backend) -> None:
    key = backend.key("missing.png")
    assert await backend.storage.head(key) is None
    with pytest.raises(ObjectNotFound):
        await backend.storage.get(key)
    with pytest.raises(ObjectNotFound):
        await backend.storage.get(key, max_bytes=10)


async def test_get_refuses_objects_over_max_bytes(backend: Backend) -> None:
    key = backend.key("big.bin")
    await backend.storage.put(key, b"x" * 1000, content_type="application/octet-stream")
    with pytest.raises(ObjectTooLarge):
        await backend.storage.get(key, max_bytes=999)
    assert await backend.storage.get(key, max_bytes=1000) == b"x" * 1000


async def test_presigned_post_as_a_browser_does_it(backend: Backend) -> None:
    key = backend.key("upload.png")
    before = datetime.now(UTC)
    post = await presign(backend, key)
    assert post.expires_at.tzinfo is not None
    assert before + timedelta(seconds=55) < post.expires_at <= before + timedelta(seconds=61)
    assert post.fields["key"] == key
    assert post.fields["Content-Type"] == "image/png"

    answer = await browser_post(backend, post)
    assert answer.status_code == 204, answer.text

    info = await backend.storage.head(key)
    assert info is not None
    # The signed Content-Type field wins over the file part's own application/octet-stream.
    assert (info.size, info.content_type) == (len(PNG), "image/png")
    assert info.etag == hashlib.md5(PNG).hexdigest()
    assert await backend.storage.get(key) == PNG


async def test_presigned_post_field_names_are_case_insensitive(backend: Backend) -> None:
    key = backend.key("case.png")
    post = await presign(backend, key)
    fields = dict(post.fields)
    fields["content-type"] = fields.pop("Content-Type")
    answer = await browser_post(backend, post, fields=fields)
    assert answer.status_code == 204, answer.text
    info = await backend.storage.head(key)
    assert info is not None
    assert info.content_type == "image/png"


async def test_presigned_post_refuses_a_file_over_the_limit(backend: Backend) -> None:
    key = backend.key("too-big.png")
    post = await presign(backend, key, max_bytes=100)
    answer = await browser_post(backend, post, b"x" * 101)
    backend.assert_refused(answer, 400, local="storage.size_out_of_range", s3="EntityTooLarge")
    assert await backend.storage.head(key) is None

    # Exactly the limit is inside the range.
    answer = await browser_post(backend, await presign(backend, key, max_bytes=100), b"x" * 100)
    assert answer.status_code == 204, answer.text


async def test_presigned_post_refuses_an_empty_file(backend: Backend) -> None:
    key = backend.key("empty.png")
    answer = await browser_post(backend, await presign(backend, key), b"")
    backend.assert_refused(answer, 400, local="storage.size_out_of_range", s3="EntityTooSmall")
    assert await backend.storage.head(key) is None


async def test_presigned_post_refuses_another_content_type(backend: Backend) -> None:
    key = backend.key("ct.png")
    post = await presign(backend, key)
    answer = await browser_post(backend, post, fields=post.fields | {"Content-Type": "text/html"})
    backend.assert_refused(
        answer, 403, local="storage.policy_mismatch", s3="AccessDenied", s3_message="Policy"
    )
    assert await backend.storage.head(key) is None


async def test_presigned_post_refuses_a_missing_content_type(backend: Backend) -> None:
    key = backend.key("noct.png")
    post = await presign(backend, key)
    fields = {k: v for k, v in post.fields.items() if k != "Content-Type"}
    answer = await browser_post(backend, post, fields=fields)
    backend.assert_refused(
        answer, 403, local="storage.policy_mismatch", s3="AccessDenied", s3_message="Policy"
    )
    assert await backend.storage.head(key) is None


async def test_presigned_post_refuses_another_key(backend: Backend) -> None:
    key, other = backend.key("signed.png"), backend.key("other.png")
    post = await presign(backend, key)
    answer = await browser_post(backend, post, fields=post.fields | {"key": other})
    backend.assert_refused(
        answer, 403, local="storage.policy_mismatch", s3="AccessDenied", s3_message="Policy"
    )
    assert await backend.storage.head(key) is None
    assert await backend.storage.head(other) is None


async def test_presigned_post_refuses_extra_fields(backend: Backend) -> None:
    key = backend.key("extra.png")
    post = await presign(backend, key)
    answer = await browser_post(backend, post, fields=post.fields | {"x-amz-meta-owner": "eve"})
    backend.assert_refused(
        answer,
        403,
        local="storage.policy_mismatch",
        s3="AccessDenied",
        s3_message="Extra input fields",
    )
    assert await backend.storage.head(key) is None


async def test_presigned_post_refuses_a_tampered_signature(backend: Backend) -> None:
    key = backend.key("forged.png")
    post = await presign(backend, key)
    name = signature_field(post.fields)
    answer = await browser_post(
        backend, post, fields=post.fields | {name: tampered(post.fields[name])}
    )
    backend.assert_refused(
        answer, 403, local="storage.signature_invalid", s3="SignatureDoesNotMatch"
    )
    unsigned = {k: v for k, v in post.fields.items() if k != name}
    answer = await browser_post(backend, post, fields=unsigned)
    backend.assert_refused(
        answer, 403, local="storage.signature_invalid", s3="SignatureDoesNotMatch"
    )
    assert await backend.storage.head(key) is None


async def test_presigned_post_without_a_file_part(backend: Backend) -> None:
    key = backend.key("nofile.png")
    post = await presign(backend, key)
    answer = await backend.http.post(
        post.url, data=post.fields, files={"attachment": ("a.png", PNG, "image/png")}
    )
    backend.assert_refused(answer, 400, local="storage.malformed", s3="InvalidArgument")
    assert await backend.storage.head(key) is None


async def test_presigned_get_with_attachment_name_and_type(backend: Backend) -> None:
    key = backend.key("photo.png")
    await backend.storage.put(key, PNG, content_type="image/png")
    name = 'été 2026 "beach".png'
    url = await backend.storage.presign_get(
        key, expires_in=60, filename=name, content_type="application/octet-stream"
    )
    answer = await backend.http.get(url)
    assert answer.status_code == 200, answer.text
    assert answer.content == PNG
    assert answer.headers["content-type"] == "application/octet-stream"
    disposition = answer.headers["content-disposition"]
    assert disposition == (
        'attachment; filename="ete 2026 _beach_.png"; '
        "filename*=UTF-8''%C3%A9t%C3%A9%202026%20%22beach%22.png"
    )
    # A client that understands RFC 6266/8187 takes filename* and recovers the exact name.
    extended = disposition.split("filename*=", 1)[1]
    charset, _, encoded = extended.split("'", 2)
    assert unquote(encoded, encoding=charset) == name

    plain = await backend.http.get(await backend.storage.presign_get(key, expires_in=60))
    assert plain.status_code == 200
    assert plain.headers["content-type"] == "image/png"
    assert "content-disposition" not in plain.headers
    assert plain.headers["etag"] == f'"{hashlib.md5(PNG).hexdigest()}"'


async def test_presigned_get_refuses_tampering(backend: Backend) -> None:
    key = backend.key("private.png")
    await backend.storage.put(key, PNG, content_type="image/png")
    url = await backend.storage.presign_get(key, expires_in=60, filename="a.png")

    forged = await backend.http.get(with_query(url, signature=tampered(signature_of(url))))
    backend.assert_refused(
        forged, 403, local="storage.signature_invalid", s3="SignatureDoesNotMatch"
    )
    # The overrides are signed too: a link cannot be turned into an inline HTML page.
    if backend.name == "local":
        renamed = with_query(url, filename="a.html", content_type="text/html")
    else:
        renamed = with_query(
            url,
            **{"response-content-disposition": "inline", "response-content-type": "text/html"},
        )
    answer = await backend.http.get(renamed)
    backend.assert_refused(
        answer, 403, local="storage.signature_invalid", s3="SignatureDoesNotMatch"
    )


async def test_presigned_urls_expire(backend: Backend) -> None:
    key = backend.key("short-lived.png")
    await backend.storage.put(key, PNG, content_type="image/png")
    post = await presign(backend, backend.key("late.png"), expires_in=1)
    url = await backend.storage.presign_get(key, expires_in=1)
    await asyncio.sleep(2.1)

    answer = await browser_post(backend, post)
    backend.assert_refused(
        answer, 403, local="storage.expired", s3="AccessDenied", s3_message="Policy expired"
    )
    assert await backend.storage.head(backend.key("late.png")) is None

    answer = await backend.http.get(url)
    backend.assert_refused(
        answer, 403, local="storage.expired", s3="AccessDenied", s3_message="expired"
    )
