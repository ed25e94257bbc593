"""The local backend's stand-in for S3: presigned POST uploads and presigned GET downloads.

Only the ``file://`` backend is served here; with S3 the browser talks to the bucket and these
routes answer 404. Outcomes follow S3's (204 on upload, 403 for signature, expiry and policy
failures, 400 for a size outside the signed range) but as problem+json.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from backend.core.errors import AppError
from backend.storage.base import InvalidKey, StorageError, content_disposition
from backend.storage.local import (
    LocalStorage,
    PolicyMismatch,
    SignatureExpired,
    SignatureInvalid,
    UploadPolicy,
)

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

router = APIRouter(prefix="/api/storage", tags=["storage"], include_in_schema=False)

# Everything before the file (fields and part headers) is small; more is not a browser upload.
MAX_FORM_OVERHEAD = 64 * 1024
# A Content-Length above the signed maximum plus this much cannot hold an acceptable file.
CONTENT_LENGTH_SLACK = 64 * 1024
# The parser is fed at most this much at a time, which bounds the file bytes held in memory.
FEED_SIZE = 64 * 1024
# Object responses are user content served from the app's origin: never sniffed, never active.
CONTENT_SECURITY_POLICY = "default-src 'none'; sandbox"


class StorageNotLocal(AppError):
    status = 404
    code = "storage.not_local"


class StorageSignatureInvalid(AppError):
    status = 403
    code = "storage.signature_invalid"


class StorageExpired(AppError):
    status = 403
    code = "storage.expired"


class StoragePolicyMismatch(AppError):
    status = 403
    code = "storage.policy_mismatch"


class StorageSizeOutOfRange(AppError):
    status = 400
    code = "storage.size_out_of_range"


class StorageMalformedUpload(AppError):
    status = 400
    code = "storage.malformed"


class StorageObjectNotFound(AppError):
    status = 404
    code = "storage.not_found"


class StorageUnavailable(AppError):
    status = 503
    code = "storage.unavailable"


def _http_error(exc: StorageError) -> AppError:
    if isinstance(exc, SignatureInvalid):
        return StorageSignatureInvalid(str(exc))
    if isinstance(exc, SignatureExpired):
        return StorageExpired(str(exc))
    if isinstance(exc, PolicyMismatch):
        return StoragePolicyMismatch(str(exc))
    if isinstance(exc, InvalidKey):
        return StorageObjectNotFound("No such object.")
    return StorageUnavailable("The storage folder cannot be used right now.")


def local_storage(request: Request) -> LocalStorage:
    storage = request.app.state.resources.storage
    if storage.kind != "local" or not isinstance(storage, LocalStorage):
        raise StorageNotLocal("Objects are served by the object store, not by this app.")
    return storage


LocalStorageDep = Annotated[LocalStorage, Depends(local_storage)]


class _UploadForm:
    """Streaming reader of an S3-style POST form: fields first, then the ``file`` part.

    The policy is verified as soon as the file part's headers end, before any of its bytes are
    kept, and the size is counted as they arrive; parts after the file are never read, as S3
    ignores them.
    """

    def __init__(self, storage: LocalStorage, boundary: bytes, content_length: int | None) -> None:
        self.storage = storage
        self.content_length = content_length
        self.fields: dict[str, str] = {}
        self.policy: UploadPolicy | None = None
        self.size = 0
        self.file_done = False
        self.pending: list[bytes] = []
        self._overhead = 0
        self._part: Literal["field", "file", "ignored"] = "field"
        self._name = ""
        self._value = bytearray()
        self._headers: dict[str, str] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
        }
        self.parser = MultipartParser(boundary, callbacks)

    def feed(self, data: bytes) -> None:
        try:
            self.parser.write(data)
        except FormParserError as exc:
            raise StorageMalformedUpload(f"The multipart body is malformed: {exc}") from None

    def _count_overhead(self, length: int) -> None:
        if self.policy is not None:
            return
        self._overhead += length
        if self._overhead > MAX_FORM_OVERHEAD:
            raise StorageMalformedUpload("The form fields before the file are too large.")

    def _on_part_begin(self) -> None:
        self._headers.clear()
        self._value.clear()
        self._name = ""

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_overhead(end - start)
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_overhead(end - start)
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._header_name.decode("latin-1").strip().lower()
        self._headers[name] = self._header_value.decode("latin-1").strip()
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        if self.file_done:
            self._part = "ignored"
            return
        disposition, params = parse_options_header(self._headers.get("content-disposition"))
        name = params.get(b"name")
        if disposition != b"form-data" or name is None:
            raise StorageMalformedUpload("A form part has no field name.")
        try:
            self._name = name.decode("utf-8")
        except UnicodeDecodeError:
            raise StorageMalformedUpload("A form field name is not UTF-8.") from None
        if self._name != "file":
            self._part = "field"
            return
        # The file's own part Content-Type is ignored, as S3 does: the signed field decides.
        self._part = "file"
        try:
            self.policy = self.storage.verify_upload(self.fields)
        except StorageError as exc:
            raise _http_error(exc) from None
        limit = self.policy.max_bytes + CONTENT_LENGTH_SLACK
        if self.content_length is not None and self.content_length > limit:
            raise StorageSizeOutOfRange(
                f"The upload is larger than the {self.policy.max_bytes} bytes allowed."
            )

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file":
            assert self.policy is not None
            self.size += end - start
            if self.size > self.policy.max_bytes:
                raise StorageSizeOutOfRange(
                    f"The file is larger than the {self.policy.max_bytes} bytes allowed."
                )
            self.pending.append(data[start:end])
        elif self._part == "field":
            self._count_overhead(end - start)
            self._value += data[start:end]

    def _on_part_end(self) -> None:
        if self._part == "file":
            self.file_done = True
            self._part = "ignored"
        elif self._part == "field":
            key = self._name.lower()  # S3 matches form field names case-insensitively
            if key in self.fields:
                raise StorageMalformedUpload(f"The field {self._name!r} appears twice.")
            try:
                self.fields[key] = self._value.decode("utf-8")
            except UnicodeDecodeError:
                raise StorageMalformedUpload(f"The field {self._name!r} is not UTF-8.") from None


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


async def _receive_file(request: Request, form: _UploadForm, out: IO[bytes]) -> str:
    """Stream the request through ``form`` into ``out``; return the file's MD5 hex."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        async for chunk in request.stream():
            for offset in range(0, len(chunk), FEED_SIZE):
                form.feed(chunk[offset : offset + FEED_SIZE])
                if form.pending:
                    data = b"".join(form.pending)
                    form.pending.clear()
                    digest.update(data)
                    await asyncio.to_thread(out.write, data)
                if form.file_done:
                    return digest.hexdigest()
    except ClientDisconnect:
        raise StorageMalformedUpload("The client went away during the upload.") from None
    if form.policy is None:
        raise StorageMalformedUpload("POST requires exactly one file upload per request.")
    raise StorageMalformedUpload("The request ended before the file did.")


@router.post("/upload", status_code=204)
async def upload(request: Request, storage: LocalStorageDep) -> Response:
    media_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise StorageMalformedUpload("Uploads are multipart/form-data forms.")
    try:
        form = _UploadForm(storage, boundary, _content_length(request))
    except FormParserError:
        raise StorageMalformedUpload("The multipart boundary is invalid.") from None

    try:
        staged = await asyncio.to_thread(storage.new_temp_file)
    except OSError as exc:
        raise StorageUnavailable("The storage folder cannot be written.") from exc
    installed = False
    try:
        out = await asyncio.to_thread(staged.open, "wb")
        try:
            etag = await _receive_file(request, form, out)
        finally:
            await asyncio.to_thread(out.close)
        if form.size < 1:
            raise StorageSizeOutOfRange("The file is empty.")
        assert form.policy is not None
        await asyncio.to_thread(
            storage.install_sync,
            staged,
            form.policy.key,
            content_type=form.policy.content_type,
            etag=etag,
        )
        installed = True
    except StorageError as exc:
        raise _http_error(exc) from exc
    except OSError as exc:
        raise StorageUnavailable("The storage folder cannot be written.") from exc
    finally:
        if not installed:
            await asyncio.to_thread(functools.partial(staged.unlink, missing_ok=True))
    return Response(status_code=204)


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    # If-None-Match uses weak comparison (RFC 9110 13.1.2): W/ prefixes do not matter.
    candidates = (c.strip().removeprefix("W/") for c in header.split(","))
    return etag in candidates


def _fallback_etag(path: Path, size: int, mtime_ns: int) -> str:
    return hashlib.md5(f"{path}:{size}:{mtime_ns}".encode(), usedforsecurity=False).hexdigest()


@router.api_route("/objects/{key:path}", methods=["GET", "HEAD"])
async def download(
    key: str,
    request: Request,
    storage: LocalStorageDep,
    expires: str | None = None,
    signature: str | None = None,
    filename: str | None = None,
    content_type: str | None = None,
) -> Response:
    try:
        expiry = storage.verify_get(
            key,
            expires=expires,
            signature=signature,
            filename=filename,
            content_type=content_type,
        )
        found = await asyncio.to_thread(storage.stat_sync, key)
    except StorageError as exc:
        raise _http_error(exc) from None
    if found is None:
        raise StorageObjectNotFound("No such object.")
    stat_result, info = found
    path = storage.path_of(key)
    tag = info.etag or _fallback_etag(path, stat_result.st_size, stat_result.st_mtime_ns)
    etag = f'"{tag}"'
    # The URL stops working at its expiry, so no cache may keep the answer past that either.
    headers = {
        "ETag": etag,
        "Cache-Control": f"private, max-age={max(0, expiry - int(time.time()))}",
    }
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    if filename:
        headers["Content-Disposition"] = content_disposition(filename)
    return FileResponse(
        path,
        stat_result=stat_result,
        media_type=content_type or info.content_type or "application/octet-stream",
        headers=headers,
    )
