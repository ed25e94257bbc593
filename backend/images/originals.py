"""Where originals live, and reading one back checked against its record.

A signed upload form writes only ``staging/…``: it stays valid until it expires, so those bytes
can change after confirm, and confirm reads them exactly once. The accepted original is stored
by the server under ``originals/{user}/{sha256}.{format}``, a key no form is ever signed for;
everything later (thumbnails, sketches, AI, downloads) reads only that key, and checks the size
and SHA-256 it gets back against the record.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid

from backend.images.models import Blob
from backend.storage.base import ObjectTooLarge, Storage, StorageError


def staging_key(user_id: uuid.UUID, upload_id: uuid.UUID) -> str:
    """Where a signed form puts its file. The form stays valid until it expires, so whatever is
    here may change after confirm: confirm reads it once and nothing reads it again."""
    return f"staging/{user_id}/{upload_id}"


def original_key(user_id: uuid.UUID, sha256: str, fmt: str) -> str:
    """Where an accepted original lives: written only by the server, after validation, and
    named by its content, so the key itself says which bytes it must hold."""
    return f"originals/{user_id}/{sha256}.{fmt}"


class OriginalChanged(StorageError):
    """The stored original is not the bytes its record describes (size or SHA-256)."""


async def read_original(storage: Storage, blob: Blob) -> bytes:
    """An original's bytes, checked against the record: never more than its recorded size is
    read, and a different size or hash is refused. Raises ``ObjectNotFound`` or
    ``OriginalChanged``."""
    try:
        data = await storage.get(blob.storage_key, max_bytes=blob.size_bytes)
    except ObjectTooLarge:
        raise OriginalChanged(f"{blob.storage_key!r} is larger than recorded") from None
    if len(data) != blob.size_bytes:
        raise OriginalChanged(f"{blob.storage_key!r} is {len(data)} bytes, not {blob.size_bytes}")
    # About 40 ms for 25 MB, off the event loop: cheap next to the decode that follows.
    digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    if digest != blob.sha256:
        raise OriginalChanged(f"{blob.storage_key!r} does not hash to its recorded SHA-256")
    return data
