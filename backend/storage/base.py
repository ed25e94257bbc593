"""Object storage: one protocol, two backends chosen by ``STORAGE_URL``.

``file://PATH`` is the embedded default; ``s3://BUCKET?endpoint_url=…&region=…`` is any S3 API
(AWS S3, GCS interoperability, SeaweedFS, MinIO).
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import parse_qs, urlsplit


class StorageError(RuntimeError):
    pass


class Storage(Protocol):
    kind: str

    async def check(self) -> None:
        """Raise when the backend cannot be reached or written to."""

    async def close(self) -> None: ...


def open_storage(url: str) -> Storage:
    parts = urlsplit(url)
    if parts.scheme == "file":
        from backend.storage.local import LocalStorage

        # file://./var/storage keeps "." in netloc; file:///abs/path has an empty netloc.
        return LocalStorage(parts.netloc + parts.path)
    if parts.scheme == "s3":
        from backend.storage.s3 import S3Storage

        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if not parts.netloc:
            raise StorageError("STORAGE_URL s3:// needs a bucket: s3://BUCKET?region=…")
        return S3Storage(
            bucket=parts.netloc,
            endpoint_url=query.get("endpoint_url"),
            region=query.get("region", "us-east-1"),
            access_key=query.get("access_key"),
            secret_key=query.get("secret_key"),
        )
    raise StorageError(f"unsupported STORAGE_URL scheme {parts.scheme!r} (use file:// or s3://)")
