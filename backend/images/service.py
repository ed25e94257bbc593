"""Uploads, validation on ingest, per-user dedup by SHA-256, image reads, deletion, stats."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

import structlog
from pydantic_core import to_json
from redis.asyncio import Redis
from sqlalchemy import (
    BindParameter,
    Integer,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    func,
    or_,
    select,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy import insert as insert_rows
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from backend.auth.models import User
from backend.config import Settings
from backend.core.db import (
    Database,
    commit,
    insert_ignoring_conflict,
    on_commit,
    row_fingerprint,
    seconds_between,
    utcnow,
)
from backend.core.errors import AppError, Conflict, NotFound
from backend.core.pagination import (
    PageParams,
    decode_cursor,
    encode_cursor,
    make_page,
    newest_first,
)
from backend.core.pixels import run_pixels
from backend.core.resources import Resources
from backend.images.metadata import Metadata, extract
from backend.images.models import Blob, Image, ImageSource, ImageStatus, Upload
from backend.images.originals import original_key, staging_key
from backend.images.schemas import Exif, ImageOut, Stats, Thumbnails
from backend.images.tasks import THUMBNAIL_CACHE, thumbnail_key
from backend.images.thumbnails import SIZES
from backend.images.validation import (
    ValidationFailure,
    check_declared,
    inspect,
    sanitize_filename,
)
from backend.storage.base import (
    ObjectNotFound,
    ObjectTooLarge,
    PresignedPost,
    Storage,
    StorageError,
)
from backend.tasks import service as tasks
from backend.tasks.deps import task_queue
from backend.tasks.queue import TaskQueue

log = structlog.get_logger(__name__)
THUMBNAIL_KIND = "thumbnails"


class ImageNotFound(NotFound):
    code = "image.not_found"


class UploadNotFound(NotFound):
    code = "upload.not_found"


class UploadRejected(AppError):
    """Validation failed: 422 with the validation's own code (and the failed record's id)."""

    status = 422


def _rejected(failure: ValidationFailure, image_id: uuid.UUID | None = None) -> UploadRejected:
    extra: dict[str, Any] = {"image_id": str(image_id)} if image_id else {}
    return UploadRejected(failure.message, code=failure.code, **extra)


# Postgres ``integer``: a declared size past it is kept as unknown rather than overflowing.
_MAX_RECORDED_SIZE = 2**31 - 1


def _recorded_name(filename: str) -> str:
    """What the user called a refused file, fit for the record (and for display)."""
    try:
        return sanitize_filename(filename)
    except ValidationFailure:
        return "unnamed"


async def refuse(
    session: AsyncSession,
    *,
    user: User,
    filename: str,
    failure: ValidationFailure,
    size: int | None,
    status: int = 422,
) -> UploadRejected:
    """Record a refused upload as a failed image (it counts in stats and is listed under
    ``status=failed``), commit that record, and return the error naming it."""
    image = await _record_failure(
        session,
        user=user,
        name=_recorded_name(filename),
        failure=failure,
        size=size if size is not None and 0 <= size <= _MAX_RECORDED_SIZE else None,
    )
    # Committed although the answer is an error: the request's own rollback must not undo it.
    await commit(session)
    rejected = _rejected(failure, image.id)
    rejected.status = status
    return rejected


async def validate_declared(
    session: AsyncSession,
    *,
    user: User,
    filename: str,
    content_type: str,
    size_bytes: int,
    max_bytes: int,
) -> str:
    """The checks on what the client says before any byte is accepted: the safe file name.
    A refusal is recorded as a failed image."""
    try:
        return check_declared(filename, content_type, size_bytes, max_bytes=max_bytes)
    except ValidationFailure as failure:
        raise await refuse(
            session, user=user, filename=filename, failure=failure, size=size_bytes
        ) from None


# Features that start work on every new image (auto-captioning…) register here; images does not
# know them. Called inside the ingesting transaction with the new image.
AfterIngest = Callable[[AsyncSession, "Deps", Image], Awaitable[None]]
_after_ingest: list[AfterIngest] = []


def register_after_ingest(hook: AfterIngest) -> None:
    _after_ingest.append(hook)


@dataclass(frozen=True)
class Deps:
    """What ingesting needs besides the session; one bundle keeps the signatures readable."""

    storage: Storage
    queue: TaskQueue
    redis: Redis
    settings: Settings

    @classmethod
    def of(cls, resources: Resources) -> Deps:
        return cls(
            storage=resources.storage,
            queue=task_queue(resources),
            redis=resources.redis,
            settings=resources.settings,
        )


async def create_upload(
    session: AsyncSession,
    deps: Deps,
    *,
    user: User,
    filename: str,
    content_type: str,
    size_bytes: int,
) -> tuple[Upload, PresignedPost]:
    settings = deps.settings
    safe_name = await validate_declared(
        session,
        user=user,
        filename=filename,
        content_type=content_type,
        size_bytes=size_bytes,
        max_bytes=settings.max_upload_bytes,
    )
    upload = Upload(
        id=uuid.uuid4(),
        user_id=user.id,
        filename=safe_name,
        content_type=content_type,
        max_bytes=size_bytes,
        expires_at=utcnow() + timedelta(seconds=settings.upload_url_ttl_seconds),
        storage_key="",
    )
    # The only key a form can write: never read after confirm (see ``staging_key``).
    upload.storage_key = staging_key(user.id, upload.id)
    session.add(upload)
    await session.flush()
    # Pinned to the declared size: the browser knows the exact size of the file it sends.
    presigned = await deps.storage.presign_post(
        upload.storage_key,
        content_type=content_type,
        max_bytes=size_bytes,
        expires_in=settings.upload_url_ttl_seconds,
    )
    return upload, presigned


async def confirm_upload(
    session: AsyncSession, deps: Deps, *, user: User, upload_id: uuid.UUID
) -> Image:
    upload = await session.get(Upload, upload_id, with_for_update=True)
    if upload is None or upload.user_id != user.id:
        raise UploadNotFound("No such upload.")
    if upload.confirmed_at is not None:
        raise Conflict("This upload was already confirmed.", code="upload.already_confirmed")
    staged = upload.storage_key
    try:
        # The one read of the staged object: these bytes are validated and stored, whatever a
        # replayed form writes to the staging key afterwards.
        data: bytes | None = await deps.storage.get(
            staged, max_bytes=min(upload.max_bytes, deps.settings.max_upload_bytes)
        )
    except ObjectNotFound:
        raise Conflict(
            "Nothing was uploaded for this upload id yet.", code="upload.not_received"
        ) from None
    except ObjectTooLarge:
        data = None  # outside the policy's range; only a misbehaving storage lets this through
    upload.confirmed_at = utcnow()
    _remove_after_commit(session, deps.storage, staged)

    def link(image_id: uuid.UUID) -> None:
        upload.image_id = image_id

    if data is None:
        failure = ValidationFailure("upload.too_large", "The file is larger than allowed.")
        image = await _record_failure(
            session, user=user, name=upload.filename, failure=failure, size=None
        )
        link(image.id)
        await commit(session)
        raise _rejected(failure, image.id)
    image = await ingest(
        session,
        deps,
        user=user,
        data=data,
        filename=upload.filename,
        content_type=upload.content_type,
        on_failure=link,
    )
    link(image.id)
    return image


def _remove_after_commit(session: AsyncSession, storage: Storage, key: str) -> None:
    async def remove() -> None:
        try:
            await storage.delete(key)
        except StorageError as exc:
            # Committed already: a leftover staging object is never read, so only log it.
            log.warning("staging_delete_failed", key=key, error=str(exc))

    on_commit(session, remove)


async def _record_failure(
    session: AsyncSession,
    *,
    user: User,
    name: str,
    failure: ValidationFailure,
    size: int | None,
) -> Image:
    image = _failed_image(user.id, name, failure, size)
    session.add(image)
    await session.flush()
    log.info("upload_rejected", code=failure.code, image_id=str(image.id))
    return image


def _failed_image(
    user_id: uuid.UUID, name: str, failure: ValidationFailure, size: int | None
) -> Image:
    """The record of a file that was refused: kept so the user sees what happened to it."""
    return Image(
        id=uuid.uuid4(),
        user_id=user_id,
        original_name=name,
        status=ImageStatus.failed,
        error=failure.message,
        error_code=failure.code,
        size_bytes=size,
        processed_at=utcnow(),
    )


async def ingest(
    session: AsyncSession,
    deps: Deps,
    *,
    user: User,
    data: bytes,
    filename: str,
    content_type: str,
    source: str = "upload",
    parent_id: uuid.UUID | None = None,
    on_failure: Callable[[uuid.UUID], None] | None = None,
) -> Image:
    """Validate bytes, share storage with an identical earlier upload, record the image and
    start its thumbnails. The original is stored under its content-addressed key only after
    validation; an invalid file is never stored."""
    settings = deps.settings
    try:
        await run_pixels(
            inspect,
            data,
            declared_type=content_type,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
        )
        meta: Metadata = await run_pixels(extract, data)
    except ValidationFailure as failure:
        image = await _record_failure(
            session, user=user, name=filename, failure=failure, size=len(data)
        )
        if on_failure is not None:
            on_failure(image.id)
        # The failed record is committed although the answer is an error: it counts in stats.
        await commit(session)
        raise _rejected(failure, image.id) from None

    blob = await _shared_blob(
        session, deps, user=user, data=data, meta=meta, content_type=content_type
    )
    ready = bool(blob.thumbnails)
    now = utcnow()
    image = Image(
        user_id=user.id,
        blob_id=blob.id,
        original_name=filename,
        status=ImageStatus.ready if ready else ImageStatus.processing,
        size_bytes=blob.size_bytes,
        source=source,
        parent_id=parent_id,
        processed_at=now if ready else None,
    )
    session.add(image)
    await session.flush()
    if not ready:
        await _queue_thumbnails(session, deps, image)
    for hook in _after_ingest:
        await hook(session, deps, image)
    return image


async def _queue_thumbnails(session: AsyncSession, deps: Deps, image: Image) -> None:
    """The task that renders ``image``'s blob's thumbnails, enqueued once the caller commits."""
    await tasks.create_task(
        session,
        deps.queue,
        deps.redis,
        user_id=image.user_id,
        kind=THUMBNAIL_KIND,
        payload={"blob_id": str(image.blob_id)},
        image_id=image.id,
    )


@dataclass(frozen=True)
class Rendered:
    """Bytes that passed ``inspect`` (with ``content_type`` as the declared type), their
    ``extract`` metadata, and their thumbnails as ``render_thumbnails`` makes them (``SIZES``,
    JPEG), rendered by a caller that had the pixels decoded for its own work anyway."""

    data: bytes
    filename: str
    content_type: str
    meta: Metadata
    thumbnails: dict[str, bytes]


async def ingest_rendered(
    session: AsyncSession,
    deps: Deps,
    *,
    user: User,
    rendered: Sequence[Rendered],
    source: str,
) -> list[Image]:
    """``ingest`` of many validated images at once, with their thumbnails already rendered:
    one image per entry, in order, in a handful of statements whatever their number.

    What results is what ``ingest`` and then the thumbnails task would leave: a new original is
    stored with its thumbnails under the same keys, its images are ready and its thumbnails task
    is recorded as succeeded (with its event), so the image is never re-read and re-decoded. An
    image whose blob already exists takes the path ``ingest`` takes (ready if the blob has
    thumbnails, else processing with a thumbnails task of its own)."""
    if not rendered:
        return []
    storage = deps.storage
    locked = (
        select(Blob)
        .where(Blob.user_id == user.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    # Locked, as in ``_shared_blob``: a concurrent delete cannot remove a blob under these.
    shas = list(dict.fromkeys(r.meta.sha256 for r in rendered))
    blobs = {b.sha256: b for b in await session.scalars(locked.where(Blob.sha256.in_(shas)))}
    new = {r.meta.sha256: r for r in rendered if r.meta.sha256 not in blobs}
    ours: dict[str, uuid.UUID] = {}
    if new:
        rows: list[dict[str, Any]] = []
        puts: list[Awaitable[None]] = []
        for sha, r in new.items():
            key = original_key(user.id, sha, r.meta.format)
            probe = Blob(user_id=user.id, sha256=sha)
            thumbs = {size: thumbnail_key(probe, size) for size in r.thumbnails}
            # Same keys, same bytes as ``_shared_blob`` and the thumbnails task write.
            puts.append(storage.put(key, r.data, content_type=r.content_type))
            puts.extend(
                storage.put(
                    thumbs[size], data, content_type="image/jpeg", cache_control=THUMBNAIL_CACHE
                )
                for size, data in r.thumbnails.items()
            )
            ours[sha] = uuid.uuid4()
            rows.append(
                {
                    "id": ours[sha],
                    "created_at": utcnow(),
                    "user_id": user.id,
                    "sha256": sha,
                    "storage_key": key,
                    "content_type": r.content_type,
                    "format": r.meta.format,
                    "size_bytes": r.meta.size_bytes,
                    "width": r.meta.width,
                    "height": r.meta.height,
                    "exif": r.meta.exif,
                    "thumbnails": thumbs,
                }
            )
        # All of them at once: the storage round trips overlap instead of adding up.
        await asyncio.gather(*puts)
        insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert
        # A concurrent twin (another upload of the same bytes) may win: its row stays.
        await session.execute(
            insert(_table(Blob)).on_conflict_do_nothing(index_elements=["user_id", "sha256"]),
            rows,
        )
        blobs.update(
            (b.sha256, b) for b in await session.scalars(locked.where(Blob.sha256.in_(list(new))))
        )
        if any(sha not in blobs for sha in new):
            raise Conflict("The same file was being deleted; upload it again.", code="upload.retry")
    now = utcnow()
    made: list[Image] = []
    settled: dict[uuid.UUID, tuple[Blob, list[Image]]] = {}
    for r in rendered:
        blob = blobs[r.meta.sha256]
        ready = bool(blob.thumbnails)
        image = Image(
            id=uuid.uuid4(),
            user_id=user.id,
            blob_id=blob.id,
            original_name=r.filename,
            status=ImageStatus.ready if ready else ImageStatus.processing,
            size_bytes=blob.size_bytes,
            source=source,
            parent_id=None,
            caption=None,
            caption_model=None,
            error=None,
            error_code=None,
            processed_at=now if ready else None,
            created_at=now,
        )
        made.append(image)
        if ours.get(blob.sha256) == blob.id:
            settled.setdefault(blob.id, (blob, []))[1].append(image)
    # Core inserts of plain rows (one cached executemany each): the unit of work's, and even
    # the ORM bulk path's, per-row bookkeeping cost more than the statements. The objects are
    # returned (and given to the hooks) as built, unattached.
    await session.execute(insert_rows(_table(Image)), [_row(image) for image in made])
    # What the thumbnails task would have recorded on succeeding, its first attempt.
    done = [
        tasks.DoneInline(
            user_id=user.id,
            kind=THUMBNAIL_KIND,
            payload={"blob_id": str(blob.id)},
            result={
                "thumbnails": sorted(blob.thumbnails or {}),
                "images": [str(image.id) for image in images],
            },
            image_id=images[0].id,
        )
        for blob, images in settled.values()
    ]
    for image in made:
        if image.status == ImageStatus.processing:
            await _queue_thumbnails(session, deps, image)
    await tasks.record_done(session, deps.redis, done)
    for image in made:
        for hook in _after_ingest:
            await hook(session, deps, image)
    return made


def _table(model: type[Any]) -> Table:
    return cast(Table, model.__table__)


def _row(obj: Any) -> dict[str, Any]:
    """An unattached ORM object's column values, for a bulk insert."""
    return {column.key: getattr(obj, column.key) for column in obj.__table__.columns}


async def record_failures(
    session: AsyncSession, *, user: User, failures: Sequence[tuple[str, ValidationFailure, int]]
) -> list[Image]:
    """Refused images (name, why, size received) recorded as ``ingest`` records each one, in
    one flush and without committing: the caller's transaction carries them."""
    made = [_failed_image(user.id, name, failure, size) for name, failure, size in failures]
    session.add_all(made)
    await session.flush()
    return made


async def _shared_blob(
    session: AsyncSession,
    deps: Deps,
    *,
    user: User,
    data: bytes,
    meta: Metadata,
    content_type: str,
) -> Blob:
    """The user's blob for these bytes, created (and the original stored) if new."""
    # Locked, so a concurrent delete of the last image cannot remove the blob under this one.
    same = (
        select(Blob)
        .where(Blob.user_id == user.id, Blob.sha256 == meta.sha256)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    # A second pass only when a concurrent delete removed the blob between insert and read.
    for _ in range(2):
        blob = await session.scalar(same)
        if blob is not None:
            return blob
        key = original_key(user.id, meta.sha256, meta.format)
        # Same key, same bytes: writing it again (a concurrent twin, a retry) changes nothing.
        await deps.storage.put(key, data, content_type=content_type)
        # Identical uploads at once race to create the blob: the loser's insert does nothing
        # (no IntegrityError) and then reads the winner's row.
        await insert_ignoring_conflict(
            session,
            Blob,
            {
                "id": uuid.uuid4(),
                "created_at": utcnow(),
                "user_id": user.id,
                "sha256": meta.sha256,
                "storage_key": key,
                "content_type": content_type,
                "format": meta.format,
                "size_bytes": meta.size_bytes,
                "width": meta.width,
                "height": meta.height,
                "exif": meta.exif,
            },
            unique=["user_id", "sha256"],
        )
    blob = await session.scalar(same)
    if blob is None:
        raise Conflict("The same file was being deleted; upload it again.", code="upload.retry")
    return blob


async def get_image(session: AsyncSession, *, user_id: uuid.UUID, image_id: uuid.UUID) -> Image:
    image = await session.get(Image, image_id)
    # Another user's image answers exactly like a missing one.
    if image is None or image.user_id != user_id:
        raise ImageNotFound("No such image.")
    return image


async def find_image(session: AsyncSession, image_id: uuid.UUID) -> Image | None:
    """Any user's image: for features whose access rule is not the session's user (a signed
    delivery URL)."""
    return await session.get(Image, image_id)


# Features that add links to an image's resource (signed delivery URLs) register here.
# (image id, status, whether its stored bytes exist) → links by name, or None.
ImageLinks = Callable[[uuid.UUID, ImageStatus, bool], dict[str, str] | None]
# And what else their answer depends on (signing keys…), so that a listing can remember items.
LinkContext = Callable[[], Hashable]
_image_links: list[ImageLinks] = []
_link_contexts: list[LinkContext] = []


def register_image_links(links: ImageLinks, *, context: LinkContext) -> None:
    _image_links.append(links)
    _link_contexts.append(context)


def _links(image: Image, blob: Blob | None) -> dict[str, str] | None:
    return _links_of(image.id, image.status, blob is not None)


def _links_of(image_id: uuid.UUID, status: ImageStatus, has_blob: bool) -> dict[str, str] | None:
    found: dict[str, str] = {}
    for links in _image_links:
        found.update(links(image_id, status, has_blob) or {})
    return found or None


async def blob_of(session: AsyncSession, image: Image) -> Blob | None:
    return await session.get(Blob, image.blob_id) if image.blob_id else None


def to_out(image: Image, blob: Blob | None) -> ImageOut:
    thumbnails = None
    if blob is not None and blob.thumbnails:
        base = f"/api/images/{image.id}/thumbnails"
        thumbnails = Thumbnails(small=f"{base}/small", medium=f"{base}/medium")
    return ImageOut(
        id=image.id,
        original_name=image.original_name,
        status=image.status,
        error=image.error,
        error_code=image.error_code,
        sha256=blob.sha256 if blob else None,
        width=blob.width if blob else None,
        height=blob.height if blob else None,
        format=blob.format if blob else None,
        size_bytes=blob.size_bytes if blob else image.size_bytes,
        exif=Exif.model_validate(blob.exif) if blob and blob.exif else None,
        caption=image.caption,
        caption_model=image.caption_model,
        thumbnails=thumbnails,
        delivery=_links(image, blob),
        source=image.source,
        parent_id=image.parent_id,
        created_at=image.created_at,
        processed_at=image.processed_at,
    )


async def image_out(session: AsyncSession, image: Image) -> ImageOut:
    return to_out(image, await blob_of(session, image))


@dataclass(frozen=True)
class ImageFilters:
    """What the gallery narrows a listing by; every field is optional."""

    status: ImageStatus | None = None
    source: ImageSource | None = None
    # A case-insensitive substring of ``original_name``; ``%`` and ``_`` match themselves.
    q: str | None = None
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive


# The columns a listing shows, read as plain rows: building ORM objects and then a validated
# model for each of a page's images cost more than the query itself. The two JSON columns come
# as their text: the listing only asks whether there are thumbnails, and pydantic reads the
# EXIF straight from JSON, so neither is decoded into Python objects first.
_LISTED: tuple[Any, ...] = (
    Image.id,
    Image.original_name,
    Image.status,
    Image.error,
    Image.error_code,
    Image.size_bytes,
    Image.caption,
    Image.caption_model,
    Image.source,
    Image.parent_id,
    Image.created_at,
    Image.processed_at,
    Blob.id.label("blob_id"),
    Blob.sha256,
    Blob.width,
    Blob.height,
    Blob.format,
    Blob.size_bytes.label("blob_size_bytes"),
    sql_cast(Blob.exif, Text).label("exif"),
    sql_cast(Blob.thumbnails, Text).label("thumbnails"),
)
# After the listed columns: the count of every match, then the columns' digest (NULL on SQLite).
_FINGERPRINT = row_fingerprint(*_LISTED[1:]).label("fingerprint")
_ID, _STATUS, _CREATED_AT, _BLOB_ID, _TOTAL, _DIGEST = 0, 2, 10, 12, 20, 21
# A JSON column's text for "nothing": SQL NULL, JSON null, or an empty object.
_EMPTY_JSON = frozenset({"null", "{}", ""})


@lru_cache(maxsize=4096)
def _exif_json(text: str) -> dict[str, Any]:
    """A stored EXIF summary as ``Exif``'s JSON form; an image's never changes once stored, and
    a gallery pages through the same images again and again. Shared: never mutate the result."""
    return Exif.model_validate_json(text).model_dump(mode="json")


def _listed_json(row: Any) -> dict[str, Any]:
    """``to_out`` of a listed row, as the JSON-ready dict of ``ImageOut``'s fields."""
    (
        image_id,
        original_name,
        status,
        error,
        error_code,
        size_bytes,
        caption,
        caption_model,
        source,
        parent_id,
        created_at,
        processed_at,
        blob_id,
        sha256,
        width,
        height,
        fmt,
        blob_size_bytes,
        exif,
        thumbnail_keys,
    ) = row[:20]
    has_blob = blob_id is not None
    thumbnails = None
    if has_blob and thumbnail_keys is not None and thumbnail_keys.strip() not in _EMPTY_JSON:
        base = f"/api/images/{image_id}/thumbnails"
        thumbnails = {"small": f"{base}/small", "medium": f"{base}/medium"}
    return {
        "id": image_id,
        "original_name": original_name,
        # The plain string (the driver's own read gives one): encoding a str enum by inference
        # cost ~1 µs per value and image.
        "status": str(status),
        "error": error,
        "error_code": error_code,
        "sha256": sha256,
        "width": width,
        "height": height,
        "format": fmt,
        "size_bytes": blob_size_bytes if has_blob else size_bytes,
        "exif": _exif_json(exif)
        if has_blob and exif is not None and exif.strip() not in _EMPTY_JSON
        else None,
        "caption": caption,
        "caption_model": caption_model,
        "thumbnails": thumbnails,
        "delivery": _links_of(image_id, status, has_blob),
        "source": source,
        "parent_id": parent_id,
        "created_at": created_at,
        "processed_at": processed_at,
    }


# An image's listed JSON by every column it is made of and what its links depend on (the link
# features' context): a gallery lists (and polls) the same images again and again, and building,
# signing and encoding an item cost more than reading it. Bounded, oldest out; a changed image or
# a rotated key is a new key, never a stale answer.
_ITEM_JSON: dict[tuple[Any, ...], bytes] = {}
ITEM_JSON_CACHE_SIZE = 4096


def _link_context() -> tuple[Hashable, ...]:
    return tuple(context() for context in _link_contexts)


def _listed_item(row: Any, context: tuple[Hashable, ...]) -> bytes:
    """``_listed_json(row)`` as JSON bytes, under the link context of this request."""
    digest = row[_DIGEST]
    # On Postgres the image's id and its columns' digest; elsewhere the columns themselves.
    key = (row[_ID], digest, context) if digest is not None else (*row[:20], context)
    item = _ITEM_JSON.get(key)
    if item is None:
        item = to_json(_listed_json(row))
        if len(_ITEM_JSON) >= ITEM_JSON_CACHE_SIZE:
            del _ITEM_JSON[next(iter(_ITEM_JSON))]
        _ITEM_JSON[key] = item
    return item


_COUNT_ALL = select(func.count()).select_from(Image).where(Image.user_id == bindparam("user_id"))


@lru_cache(maxsize=2)
def _unfiltered_page(after_cursor: bool) -> Select[Any]:
    """``list_images``'s statement without filters, as ``newest_first`` builds it, with the
    user, the cursor's position and the page size left as bound parameters."""
    stmt = (
        select(*_LISTED, _COUNT_ALL.scalar_subquery().label("total"), _FINGERPRINT)
        .outerjoin(Blob, Blob.id == Image.blob_id)
        .where(Image.user_id == bindparam("user_id"))
    )
    if after_cursor:
        at: BindParameter[datetime] = bindparam("after_at")
        row_id: BindParameter[uuid.UUID] = bindparam("after_id")
        stmt = stmt.where(
            or_(Image.created_at < at, and_(Image.created_at == at, Image.id < row_id))
        )
    return stmt.order_by(Image.created_at.desc(), Image.id.desc()).limit(
        bindparam("limit", type_=Integer)
    )


async def list_images(
    db: Database,
    *,
    user_id: uuid.UUID,
    page: PageParams,
    filters: ImageFilters = ImageFilters(),  # noqa: B008 (frozen, so sharing it is safe)
) -> tuple[list[bytes], str | None, int]:
    """One page of the user's images, newest first, and how many match over all pages.

    The items are ``ImageOut``'s JSON, encoded (``_listed_item``). One statement: the page with
    each image's stored bytes' row, and the count of every match as an uncorrelated subquery
    (computed once by the database), so a page is one round trip. Read in autocommit without
    an ORM session (``Database.fetch``, ``Database.reader``): a session around it cost more
    than the statement.
    """
    if filters == ImageFilters():
        # The gallery's usual request: a statement built once, with only its values bound.
        values: dict[str, Any] = {"user_id": user_id, "limit": page.limit + 1}
        if page.cursor:
            after_at, values["after_id"] = decode_cursor(page.cursor)
            # Bound as the driver takes it (Database.fetch skips the UTC column's own conversion).
            values["after_at"] = after_at.astimezone(UTC)
        found = await db.fetch(_unfiltered_page(bool(page.cursor)), values)
        if found:
            total = found[0][_TOTAL]
        elif page.cursor:
            total = (await db.fetch(_COUNT_ALL, {"user_id": user_id}))[0][0] or 0
        else:
            total = 0
        cursor = None
        if len(found) > page.limit:
            del found[page.limit :]
            cursor = encode_cursor(found[-1][_CREATED_AT], found[-1][_ID])
        context = _link_context()
        return [_listed_item(row, context) for row in found], cursor, total
    where = [Image.user_id == user_id]
    if filters.status is not None:
        where.append(Image.status == filters.status)
    if filters.source is not None:
        where.append(Image.source == filters.source.value)
    if filters.q:
        # lower(x) LIKE '%' || lower(:q) || '%' ESCAPE '/', on SQLite and Postgres alike.
        where.append(Image.original_name.icontains(filters.q, autoescape=True))
    if filters.created_after is not None:
        where.append(Image.created_at >= filters.created_after)
    if filters.created_before is not None:
        where.append(Image.created_at < filters.created_before)
    count = select(func.count()).select_from(Image).where(*where)
    stmt: Select[Any] = (
        select(*_LISTED, count.scalar_subquery().label("total"), _FINGERPRINT)
        .outerjoin(Blob, Blob.id == Image.blob_id)
        .where(*where)
    )
    async with db.reader() as conn:
        matched = list(
            (await conn.execute(newest_first(stmt, Image.created_at, Image.id, page))).all()
        )
        if matched:
            total = matched[0].total
        elif page.cursor:
            # Past the last page there is no row to carry the count.
            total = await conn.scalar(count) or 0
        else:
            total = 0
    rows, cursor = make_page(matched, page)
    context = _link_context()
    return [_listed_item(row, context) for row in rows], cursor, total


# Other features register how to find the stored objects they derived from an image (sketch
# results…), so deleting the image removes those bytes too without images knowing the features.
DerivedKeys = Callable[[AsyncSession, uuid.UUID], Awaitable[list[str]]]
_derived_keys: list[DerivedKeys] = []


def register_derived_keys(finder: DerivedKeys) -> None:
    _derived_keys.append(finder)


async def delete_image(
    session: AsyncSession, storage: Storage, *, user_id: uuid.UUID, image_id: uuid.UUID
) -> None:
    image = await get_image(session, user_id=user_id, image_id=image_id)
    blob = await blob_of(session, image)
    keys: list[str] = []
    for finder in _derived_keys:
        keys.extend(await finder(session, image.id))
    await session.delete(image)
    await session.flush()
    if blob is not None:
        others = await session.scalar(
            select(func.count()).select_from(Image).where(Image.blob_id == blob.id)
        )
        if not others:
            # Also the thumbnails' derived keys: a task may be writing them right now.
            thumbs = {*(blob.thumbnails or {}).values(), *(thumbnail_key(blob, s) for s in SIZES)}
            keys.extend([blob.storage_key, *sorted(thumbs)])
            await session.delete(blob)
            await session.flush()
    if not keys:
        return

    async def remove_bytes() -> None:
        # After commit: a rolled-back delete must not have lost the bytes.
        await storage.delete_many(keys)

    on_commit(session, remove_bytes)


async def stats(session: AsyncSession, *, user_id: uuid.UUID | None) -> Stats:
    scope = select(Image.status, func.count()).group_by(Image.status)
    if user_id is not None:
        scope = scope.where(Image.user_id == user_id)
    by_status = {status.value: 0 for status in ImageStatus}
    for status, count in (await session.execute(scope)).all():
        by_status[status.value] = count
    total = sum(by_status.values())
    finished = by_status["ready"] + by_status["failed"]
    average = select(
        func.avg(seconds_between(session, Image.created_at, Image.processed_at))
    ).where(Image.status == ImageStatus.ready, Image.processed_at.is_not(None))
    if user_id is not None:
        average = average.where(Image.user_id == user_id)
    mean = await session.scalar(average)
    return Stats(
        total=total,
        failed=by_status["failed"],
        # Nothing finished has no rate yet: null, like the average, rather than a false 0 %.
        success_rate=round(by_status["ready"] / finished, 4) if finished else None,
        average_processing_time_seconds=round(float(mean), 3) if mean is not None else None,
        by_status=by_status,
    )
