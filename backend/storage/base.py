"""Object storage: one protocol, two backends chosen by ``STORAGE_URL``.

``file://PATH`` is the embedded default; ``s3://BUCKET?endpoint_url=…&region=…`` is any S3 API
(AWS S3, GCS interoperability, SeaweedFS, MinIO).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from urllib.parse import parse_qs, quote, urlsplit


class StorageError(RuntimeError):
    pass


class ObjectNotFound(StorageError):
    pass


class ObjectTooLarge(StorageError):
    pass


class InvalidKey(StorageError):
    pass


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str | None
    # Without the quotes HTTP puts around it, so both backends compare equal on equal bytes.
    etag: str | None
    cache_control: str | None = None


@dataclass(frozen=True)
class PresignedPost:
    """What a browser needs to upload one object: POST ``fields`` then ``file`` to ``url``."""

    url: str
    fields: dict[str, str]
    expires_at: datetime


class Storage(Protocol):
    kind: str

    async def check(self) -> None:
        """Raise when the backend cannot be reached or written to."""

    async def put(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None: ...

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """Raise ``ObjectNotFound``, or ``ObjectTooLarge`` rather than read past ``max_bytes``."""

    async def head(self, key: str) -> ObjectInfo | None: ...

    async def delete(self, key: str) -> None:
        """Succeed when the object is already gone."""

    async def delete_many(self, keys: list[str]) -> None: ...

    async def presign_post(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: int
    ) -> PresignedPost:
        """Sign an upload pinned to ``key``, ``content_type`` and 1..``max_bytes`` bytes."""

    async def presign_get(
        self,
        key: str,
        *,
        expires_in: int,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """Sign a download URL; ``filename`` makes it an attachment with that name."""

    async def close(self) -> None: ...


_UNSAFE_FALLBACK = re.compile(r"[^A-Za-z0-9._ ()+-]")


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """An RFC 6266 header: an ASCII ``filename`` every client reads, ``filename*`` for the rest."""
    # A name is never a path, whatever the client that uploaded it believed.
    name = filename.replace("/", "_").replace("\\", "_").strip() or "download"
    # NFKD splits "é" into "e" + accent, so the fallback reads "ete" rather than "_t_".
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    fallback = _UNSAFE_FALLBACK.sub("_", stripped).strip() or "download"
    if fallback == name:
        return f'{disposition}; filename="{name}"'
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def open_storage(url: str, *, secret: str = "", public_base_url: str = "") -> Storage:
    """Open the backend named by ``url``.

    ``secret`` and ``public_base_url`` matter to the local backend only, which signs URLs served
    by the app itself; S3 signs with its own credentials.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        from backend.storage.local import LocalStorage

        # file://./var/storage keeps "." in netloc; file:///abs/path has an empty netloc.
        return LocalStorage(
            parts.netloc + parts.path, secret=secret, public_base_url=public_base_url
        )
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
