"""Local folder storage, the embedded default.

Objects live under ``ROOT/objects/<key>``, their content type and ETag under
``ROOT/meta/<key>.json`` (a separate tree, so no key can collide with a sidecar), and writes are
staged in ``ROOT/tmp`` and renamed into place so a reader never sees half an object. Browsers
reach objects through URLs the app signs with HMAC-SHA256 and serves itself
(``backend.storage.router``), mirroring S3's presigned POST and GET.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import mimetypes
import os
import re
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from backend.storage.base import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectTooLarge,
    PresignedPost,
    StorageError,
)

# S3's own key length limit; longer keys could not move to S3 later.
MAX_KEY_LENGTH = 1024
_KEY_CHARS = re.compile(r"[A-Za-z0-9._/-]+")

UPLOAD_PATH = "/api/storage/upload"
OBJECTS_PATH = "/api/storage/objects/"

FIELD_KEY = "key"
FIELD_CONTENT_TYPE = "Content-Type"
FIELD_EXPIRES = "x-atelier-expires"
FIELD_MAX_BYTES = "x-atelier-max-bytes"
FIELD_POLICY = "x-atelier-policy"
FIELD_SIGNATURE = "x-atelier-signature"
UPLOAD_FIELDS = frozenset(
    f.lower()
    for f in (
        FIELD_KEY,
        FIELD_CONTENT_TYPE,
        FIELD_EXPIRES,
        FIELD_MAX_BYTES,
        FIELD_POLICY,
        FIELD_SIGNATURE,
    )
)


class SignatureInvalid(StorageError):
    pass


class SignatureExpired(StorageError):
    pass


class PolicyMismatch(StorageError):
    pass


@dataclass(frozen=True)
class UploadPolicy:
    key: str
    content_type: str
    max_bytes: int
    expires: int


def validate_key(key: str) -> str:
    """Refuse any key that could name something outside the objects folder, or differ on S3."""
    if not key or len(key) > MAX_KEY_LENGTH or not _KEY_CHARS.fullmatch(key):
        raise InvalidKey(f"invalid storage key {key!r}")
    if key.startswith("/") or ".." in key or any(s in ("", ".") for s in key.split("/")):
        raise InvalidKey(f"invalid storage key {key!r}")
    return key


def _check_content_type(content_type: str) -> None:
    # It ends up in a response header, where a control character would break the answer.
    if not content_type or not content_type.isprintable():
        raise StorageError(f"invalid content type {content_type!r}")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _replace_making_parent(source: Path, target: Path) -> None:
    """``os.replace``, creating the target's folder when it is missing: most puts go to a
    folder that exists, and trying first spares them a ``mkdir`` per path component."""
    try:
        os.replace(source, target)
    except FileNotFoundError:
        if not source.exists():
            raise
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)


class LocalStorage:
    kind = "local"

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        secret: str = "",
        public_base_url: str = "",
    ) -> None:
        self.root = Path(root).resolve()
        self.objects = self.root / "objects"
        self.meta = self.root / "meta"
        self.tmp = self.root / "tmp"
        # The folders as the containment check compares against, resolved once: a put resolves
        # its own paths only (resolving these too was a fifth of a put's CPU).
        self._objects_real = self.objects.resolve()
        self._meta_real = self.meta.resolve()
        self.public_base_url = public_base_url.rstrip("/")
        self._writer: ThreadPoolExecutor | None = None
        # A key derived for this one purpose: a URL signature can never double as a session
        # token or CSRF value signed with the same app secret.
        self._signing_key = (
            hmac.new(secret.encode(), b"atelier/storage/v1", hashlib.sha256).digest()
            if secret
            else b""
        )

    # -- paths ---------------------------------------------------------------------------------

    def path_of(self, key: str) -> Path:
        validate_key(key)
        return self._contained(self._objects_real, key, key)

    def _meta_path(self, key: str) -> Path:
        validate_key(key)
        return self._contained(self._meta_real, f"{key}.json", key)

    @staticmethod
    def _contained(inside: Path, relative: str, key: str) -> Path:
        """``inside / relative``, refused when a symlink planted there leads outside ``inside``.

        ``inside`` was resolved once, so only the folder itself and what lies below it can be
        a link now: those components are looked at (an ``lstat`` each, stopping at the first
        that does not exist yet), and a path with a link in it is resolved in full. Resolving
        every path from ``/`` (a dozen ``lstat`` calls in Python) was a third of a put's CPU."""
        current = str(inside)
        for part in ("", *relative.split("/")):
            if part:
                current = f"{current}/{part}"
            try:
                mode = os.lstat(current).st_mode
            except (FileNotFoundError, NotADirectoryError):
                break
            if stat.S_ISLNK(mode):
                path = (inside / relative).resolve()
                if not path.is_relative_to(inside):
                    raise InvalidKey(f"invalid storage key {key!r}")
                return path
        return inside / relative

    def new_temp_file(self) -> Path:
        """An empty file in the staging folder, on the same filesystem as the objects."""
        return self._staged(b"")

    def _staged(self, data: bytes) -> Path:
        """A new file in the staging folder holding ``data``.

        Plain ``os`` calls, three system calls in all: ``mkstemp`` then ``Path.write_bytes``
        opened the file twice and asked whether it was a terminal, and on a host where a
        system call is dear (a sandboxed VM) those were most of a small put's cost."""
        path = f"{self.tmp}/put-{uuid.uuid4().hex}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            self.tmp.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, flags, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        return Path(path)

    # -- blocking helpers (run in threads) -----------------------------------------------------

    def _probe(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        # A real write proves the folder is usable (a read-only mount would pass an exists check).
        with tempfile.NamedTemporaryFile(dir=self.tmp, prefix=".health-", delete=True) as fh:
            fh.write(b"ok")

    def _write_json_atomic(self, path: Path, payload: dict[str, Any]) -> None:
        staged = self._staged(json.dumps(payload).encode())
        try:
            _replace_making_parent(staged, path)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise

    def install_sync(
        self,
        staged: Path,
        key: str,
        *,
        content_type: str,
        etag: str,
        cache_control: str | None = None,
    ) -> None:
        """Move a fully written staging file into place as ``key``."""
        self._install(
            staged,
            self.path_of(key),
            key,
            content_type=content_type,
            etag=etag,
            cache_control=cache_control,
        )

    def _install(
        self,
        staged: Path,
        target: Path,
        key: str,
        *,
        content_type: str,
        etag: str,
        cache_control: str | None,
    ) -> None:
        meta = self._meta_path(key)
        try:
            # Metadata first: a reader may briefly see new metadata with the old bytes, but
            # never bytes whose metadata is missing.
            self._write_json_atomic(
                meta,
                {"content_type": content_type, "etag": etag, "cache_control": cache_control},
            )
            _replace_making_parent(staged, target)
        except OSError as exc:
            staged.unlink(missing_ok=True)
            raise StorageError(f"cannot store {key!r}: {exc.strerror or exc}") from exc

    def _put_sync(
        self, key: str, data: bytes, content_type: str, cache_control: str | None
    ) -> None:
        target = self.path_of(key)  # refuse a bad key before touching the disk
        try:
            staged = self._staged(data)
        except OSError as exc:
            raise StorageError(f"cannot store {key!r}: {exc.strerror or exc}") from exc
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        self._install(
            staged, target, key, content_type=content_type, etag=etag, cache_control=cache_control
        )

    def _read_meta(self, key: str) -> dict[str, Any]:
        try:
            meta = json.loads(self._meta_path(key).read_text())
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    def stat_sync(self, key: str) -> tuple[os.stat_result, ObjectInfo] | None:
        path = self.path_of(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"cannot stat {key!r}: {exc.strerror or exc}") from exc
        if not path.is_file():
            return None
        meta = self._read_meta(key)
        content_type = meta.get("content_type") or mimetypes.guess_type(key)[0]
        info = ObjectInfo(
            key=key,
            size=st.st_size,
            content_type=content_type,
            etag=meta.get("etag"),
            cache_control=meta.get("cache_control"),
        )
        return st, info

    def _get_sync(self, key: str, max_bytes: int | None) -> bytes:
        path = self.path_of(key)
        try:
            with path.open("rb") as fh:
                if max_bytes is None:
                    return fh.read()
                size = os.fstat(fh.fileno()).st_size
                if size > max_bytes:
                    raise ObjectTooLarge(f"{key!r} is {size} bytes, over {max_bytes}")
                data = fh.read(max_bytes + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"cannot read {key!r}: {exc.strerror or exc}") from exc
        if len(data) > max_bytes:
            raise ObjectTooLarge(f"{key!r} is over {max_bytes} bytes")
        return data

    def _delete_sync(self, keys: list[str]) -> None:
        # Validate every key before deleting any, so a bad batch changes nothing.
        paths = [(k, self.path_of(k), self._meta_path(k)) for k in keys]
        for key, target, meta in paths:
            try:
                target.unlink(missing_ok=True)
                meta.unlink(missing_ok=True)
            except (NotADirectoryError, IsADirectoryError):
                continue  # a "folder" key, or a path through a file: no such object
            except OSError as exc:
                raise StorageError(f"cannot delete {key!r}: {exc.strerror or exc}") from exc

    # -- Storage protocol ----------------------------------------------------------------------

    async def check(self) -> None:
        await asyncio.to_thread(self._probe)

    async def _write(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a blocking write on this storage's one writer thread.

        Puts and deletes take their turns in one thread instead of one each from the default
        pool: the disk gained nothing from several at once, while the threads' fight over the
        GIL cost more kernel time than the writes (a 60 KB put at 4 at once: about 0.95 ms of
        CPU in pool threads, 0.65 ms in the one thread, and no slower)."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-storage")
        await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def put(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        await self._write(self._put_sync, key, data, content_type, cache_control)

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        return await asyncio.to_thread(self._get_sync, key, max_bytes)

    async def head(self, key: str) -> ObjectInfo | None:
        found = await asyncio.to_thread(self.stat_sync, key)
        return found[1] if found else None

    async def delete(self, key: str) -> None:
        await self._write(self._delete_sync, [key])

    async def delete_many(self, keys: list[str]) -> None:
        if keys:
            await self._write(self._delete_sync, keys)

    async def presign_post(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: int
    ) -> PresignedPost:
        validate_key(key)
        _check_content_type(content_type)
        if max_bytes < 1 or expires_in < 1:
            raise StorageError("presign_post needs max_bytes >= 1 and expires_in >= 1")
        expires = int(time.time()) + expires_in
        # The policy is carried as signed, apart from the fields the browser sends back, so a
        # changed field is told apart from a forged signature, as S3 does.
        policy = _b64encode(
            json.dumps(
                {"key": key, "content_type": content_type, "max_bytes": max_bytes, "exp": expires},
                separators=(",", ":"),
            ).encode()
        )
        fields = {
            FIELD_KEY: key,
            FIELD_CONTENT_TYPE: content_type,
            FIELD_EXPIRES: str(expires),
            FIELD_MAX_BYTES: str(max_bytes),
            FIELD_POLICY: policy,
            FIELD_SIGNATURE: self._sign(b"post", policy.encode()),
        }
        return PresignedPost(
            url=f"{self.public_base_url}{UPLOAD_PATH}",
            fields=fields,
            expires_at=datetime.fromtimestamp(expires, UTC),
        )

    async def presign_get(
        self,
        key: str,
        *,
        expires_in: int,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> str:
        validate_key(key)
        if content_type is not None:
            _check_content_type(content_type)
        if expires_in < 1:
            raise StorageError("presign_get needs expires_in >= 1")
        expires = int(time.time()) + expires_in
        query = {"expires": str(expires)}
        if filename:
            query["filename"] = filename
        if content_type:
            query["content_type"] = content_type
        query["signature"] = self._sign_get(key, expires, filename, content_type)
        return f"{self.public_base_url}{OBJECTS_PATH}{quote(key)}?{urlencode(query)}"

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            # Writes already handed over finish first; a later one starts a new thread.
            await asyncio.to_thread(writer.shutdown)

    # -- signatures ----------------------------------------------------------------------------

    def _sign(self, purpose: bytes, payload: bytes) -> str:
        if not self._signing_key:
            raise StorageError("local storage cannot sign URLs without the app secret")
        return hmac.new(self._signing_key, purpose + b"\n" + payload, hashlib.sha256).hexdigest()

    def _sign_get(
        self, key: str, expires: int, filename: str | None, content_type: str | None
    ) -> str:
        # JSON keeps the parts unambiguous whatever characters a filename holds.
        payload = json.dumps([key, expires, filename or "", content_type or ""]).encode()
        return self._sign(b"get", payload)

    def _signature_matches(self, given: str, expected: str) -> bool:
        return hmac.compare_digest(given.encode(), expected.encode())

    def verify_get(
        self,
        key: str,
        *,
        expires: str | None,
        signature: str | None,
        filename: str | None,
        content_type: str | None,
        now: float | None = None,
    ) -> int:
        """Check a download URL; return its expiry (unix seconds)."""
        if not self._signing_key or not expires or not signature or not expires.isdigit():
            raise SignatureInvalid("missing or malformed signature")
        expected = self._sign_get(key, int(expires), filename, content_type)
        if not self._signature_matches(signature, expected):
            raise SignatureInvalid("signature does not match")
        if (time.time() if now is None else now) > int(expires):
            raise SignatureExpired("the URL has expired")
        return int(expires)

    def verify_upload(self, fields: Mapping[str, str], *, now: float | None = None) -> UploadPolicy:
        """Check an upload form's fields (names lower-cased) against its signed policy."""
        policy_text = fields.get(FIELD_POLICY)
        signature = fields.get(FIELD_SIGNATURE)
        if not self._signing_key or not policy_text or not signature:
            raise SignatureInvalid("missing policy or signature")
        if not self._signature_matches(signature, self._sign(b"post", policy_text.encode())):
            raise SignatureInvalid("signature does not match")
        try:
            raw = json.loads(_b64decode(policy_text))
            policy = UploadPolicy(
                key=str(raw["key"]),
                content_type=str(raw["content_type"]),
                max_bytes=int(raw["max_bytes"]),
                expires=int(raw["exp"]),
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            # Only reachable with our own key, i.e. a bug rather than an attack.
            raise SignatureInvalid("unreadable policy") from exc
        if (time.time() if now is None else now) > policy.expires:
            raise SignatureExpired("the upload policy has expired")
        extra = sorted(set(fields) - UPLOAD_FIELDS)
        if extra:
            raise PolicyMismatch(f"extra input fields: {', '.join(extra)}")
        expected = {
            FIELD_KEY: policy.key,
            FIELD_CONTENT_TYPE.lower(): policy.content_type,
            FIELD_EXPIRES: str(policy.expires),
            FIELD_MAX_BYTES: str(policy.max_bytes),
        }
        for name, value in expected.items():
            if fields.get(name) != value:
                raise PolicyMismatch(f"field {name!r} does not match the signed policy")
        return policy
