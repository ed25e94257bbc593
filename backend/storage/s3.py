"""S3-API storage through boto3; blocking calls run in worker threads, off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from backend.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectTooLarge,
    PresignedPost,
    StorageError,
    content_disposition,
)

_T = TypeVar("_T")
# HEAD answers carry no body, so a missing object's code is the bare status.
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# The DeleteObjects API takes at most this many keys per request.
_DELETE_BATCH = 1000


def _error_code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code") or status or "unknown")


class S3Storage:
    kind = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        # Path-style when an endpoint is given: SeaweedFS/MinIO/GCS interop have no per-bucket DNS.
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
            # boto3 ≥ 1.36 otherwise sends every put as aws-chunked with a streaming checksum
            # trailer, which the GCS XML API refuses: checksums only where an API demands one.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )

    async def _run(self, action: str, key: str, fn: Callable[[], _T]) -> _T:
        try:
            return await asyncio.to_thread(fn)
        except ClientError as exc:
            code = _error_code(exc)
            if code in _MISSING_CODES:
                raise ObjectNotFound(key) from exc
            raise StorageError(f"S3 {action} of {key!r} failed: {code}") from exc
        except BotoCoreError as exc:
            # Connection, credential and parameter errors: no S3 code, but still ours to report.
            raise StorageError(f"S3 {action} of {key!r} failed: {exc}") from exc

    async def check(self) -> None:
        await self._run("check", "", lambda: self.client.head_bucket(Bucket=self.bucket))

    async def put(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        extra: dict[str, str] = {"ContentType": content_type}
        if cache_control is not None:
            extra["CacheControl"] = cache_control
        await self._run(
            "put",
            key,
            lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra),
        )

    def _head_sync(self, key: str) -> ObjectInfo:
        answer = self.client.head_object(Bucket=self.bucket, Key=key)
        etag = answer.get("ETag")
        return ObjectInfo(
            key=key,
            size=int(answer["ContentLength"]),
            content_type=answer.get("ContentType"),
            etag=etag.strip('"') if etag else None,
            cache_control=answer.get("CacheControl"),
        )

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            return await self._run("head", key, lambda: self._head_sync(key))
        except ObjectNotFound:
            return None

    def _get_sync(self, key: str, max_bytes: int | None) -> bytes:
        params: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if max_bytes is not None:
            size = self._head_sync(key).size
            if size > max_bytes:
                raise ObjectTooLarge(f"{key!r} is {size} bytes, over {max_bytes}")
            # S3 refuses any range on an empty object (416), and there is nothing to bound.
            if size > 0:
                # One byte past the limit: if the object grew since the HEAD, that byte tells.
                params["Range"] = f"bytes=0-{max_bytes}"
        answer = self.client.get_object(**params)
        body = answer["Body"]
        try:
            data: bytes = body.read() if max_bytes is None else body.read(max_bytes + 1)
        finally:
            body.close()
        if max_bytes is not None and len(data) > max_bytes:
            raise ObjectTooLarge(f"{key!r} is over {max_bytes} bytes")
        return data

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        return await self._run("get", key, lambda: self._get_sync(key, max_bytes))

    async def delete(self, key: str) -> None:
        # S3 answers 204 for a key that does not exist, which is the idempotence we promise.
        await self._run(
            "delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=key)
        )

    def _delete_many_sync(self, keys: list[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            answer = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            # DeleteObjects reports per-key failures in a 200 answer, not as an exception.
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageError(
                    f"S3 delete of {first.get('Key')!r} failed: {first.get('Code', 'unknown')}"
                    + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
                )

    async def delete_many(self, keys: list[str]) -> None:
        unique = list(dict.fromkeys(keys))
        if unique:
            await self._run("delete", unique[0], lambda: self._delete_many_sync(unique))

    async def presign_post(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: int
    ) -> PresignedPost:
        if max_bytes < 1 or expires_in < 1:
            raise StorageError("presign_post needs max_bytes >= 1 and expires_in >= 1")
        # Taken before signing, so the promise we make is never later than the policy's.
        expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=expires_in)
        answer = await self._run(
            "presign_post",
            key,
            lambda: self.client.generate_presigned_post(
                Bucket=self.bucket,
                Key=key,
                Fields={"Content-Type": content_type},
                Conditions=[
                    {"Content-Type": content_type},
                    ["content-length-range", 1, max_bytes],
                ],
                ExpiresIn=expires_in,
            ),
        )
        fields = {str(name): str(value) for name, value in answer["fields"].items()}
        return PresignedPost(url=str(answer["url"]), fields=fields, expires_at=expires_at)

    async def presign_get(
        self,
        key: str,
        *,
        expires_in: int,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> str:
        params: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        if content_type:
            params["ResponseContentType"] = content_type
        url = await self._run(
            "presign_get",
            key,
            lambda: self.client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires_in
            ),
        )
        return str(url)

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)
