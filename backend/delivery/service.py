"""Delivery: minting signed URLs, and serving them from a cache of rendered derivatives.

A variant (source + canonical options without expiry + negotiated format + quality) is
rendered once and stored under a key derived from it, so a hit on any instance is one storage
read and no database query; a ``delivery_derivatives`` row records each object so deleting the
source finds and deletes them. Concurrent first requests for one variant render once: the first
takes a Redis lock (``SET NX PX``) and the others wait for its object, rendering themselves only
if the lock holder vanishes. Pixel work runs on the shared pixel threads (``run_pixels``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Hashable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import structlog
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.config import Settings
from backend.core.db import Database, commit
from backend.core.errors import AppError, Forbidden, NotFound
from backend.core.pixels import run_pixels
from backend.delivery import signing, transform
from backend.delivery.models import Derivative
from backend.delivery.signing import Options, Source
from backend.images import service as images
from backend.images.models import Blob, ImageStatus
from backend.images.originals import OriginalChanged, read_original
from backend.imaging import encode as encoding
from backend.imaging.decode import decode
from backend.sketches import service as sketches
from backend.sketches.models import Sketch
from backend.storage.base import ObjectNotFound, Storage

log = structlog.get_logger(__name__)
Pixels = npt.NDArray[np.uint8]

IMMUTABLE = "public, max-age=31536000, immutable"
_LOCK_TTL_MS = 60_000
_POLL_SECONDS = 0.05


class DeliveryForbidden(Forbidden):
    code = "delivery.bad_signature"


class SourceGone(NotFound):
    code = "delivery.not_found"


# --- decoding: one private seam ---------------------------------------------------------------


def _decode(data: bytes, *, max_side: int | None, max_pixels: int, alpha: bool = False) -> Pixels:
    """Upright BGR (or BGRA) pixels at most ``max_side`` on the long side, reduced on load: the
    one bounded decoder, behind one name that tests can count calls of."""
    return decode(data, max_side=max_side, max_pixels=max_pixels, alpha=alpha)


# --- minting -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Minted:
    url: str
    expires_at: datetime | None


def _check_bounds(options: Options, settings: Settings) -> str | None:
    """Why ``options`` exceed the configured output bounds, or None."""
    side = settings.delivery_max_side
    for name, value in (("width", options.width), ("height", options.height)):
        if value is not None and value > side:
            return f"{name} {value} is over the maximum output side of {side} px"
    if (
        options.width
        and options.height
        and options.width * options.height > (settings.delivery_max_pixels)
    ):
        return f"{options.width}×{options.height} is over {settings.delivery_max_pixels} pixels"
    if options.format == "avif" and not encoding.avif_available():
        return "AVIF output is not available on this server"
    return None


def sign(settings: Settings, options: Options, source: Source) -> str:
    """The absolute URL; what ``POST /api/delivery/url`` answers, for features that link."""
    return settings.public_base_url + signing.sign_path(signing.keyring(settings), options, source)


async def mint(
    session: AsyncSession,
    settings: Settings,
    *,
    user_id: uuid.UUID,
    source: Source,
    options: Options,
    expires_in: int | None,
) -> Minted:
    if source.kind == "image":
        image = await images.get_image(session, user_id=user_id, image_id=source.id)
        if image.status == ImageStatus.failed or image.blob_id is None:
            raise AppError(
                "This image failed validation; there is nothing to deliver.",
                code="delivery.source_failed",
                status=409,
            )
    else:
        sketch = await sketches.get_sketch(session, user_id=user_id, sketch_id=source.id)
        if sketch.result_key is None:
            raise AppError(
                "This sketch has no result yet.", code="delivery.source_not_ready", status=409
            )
    problem = _check_bounds(options, settings)
    if problem is not None:
        raise AppError(problem, code="delivery.out_of_bounds", status=422)
    expires_at = None
    if expires_in is not None:
        if expires_in > settings.delivery_max_expires_in:
            raise AppError(
                f"expires_in is over the maximum of {settings.delivery_max_expires_in} s.",
                code="delivery.bad_expiry",
                status=422,
            )
        expires = int(time.time()) + expires_in
        options = Options(**{**options.__dict__, "expires": expires})
        expires_at = datetime.fromtimestamp(expires, UTC)
    return Minted(sign(settings, options, source), expires_at)


# --- links other features show ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Signer:
    """What a link depends on besides its source, resolved once per request rather than once
    per link (a page of images carries dozens)."""

    base: str
    kid: str
    secret: bytes
    keys: dict[str, bytes] = field(compare=False, hash=False)


def _signer(settings: Settings) -> _Signer:
    keys = signing.keyring(settings)
    kid, secret = next(iter(keys.items()))
    return _Signer(settings.public_base_url, kid, secret, keys)


# The signer of the app serving the current request, so that resources built without its
# settings (an image's JSON) can carry signed links; set by a dependency on the routes that
# show them.
_current: ContextVar[_Signer | None] = ContextVar("delivery_signer", default=None)
# 400 px is a gallery card (about 260 CSS px) on a 1.5–2× screen, which would otherwise take 800.
LINK_SIZES = {"small": 200, "card": 400, "medium": 800, "large": 1600}


async def bind_settings(settings: Settings) -> None:
    _current.set(_signer(settings))


def image_links(image_id: uuid.UUID, status: ImageStatus, has_blob: bool) -> dict[str, str] | None:
    """Signed, non-expiring ``format=auto`` URLs of an image at the thumbnail sizes."""
    signer = _current.get()
    if signer is None or not has_blob or status == ImageStatus.failed:
        return None
    return _size_links(signer, f"image/{image_id}")


def link_context() -> Hashable:
    """All that ``image_links``' answer depends on besides its arguments, for callers that
    remember answers: the base URL and the minting key."""
    signer = _current.get()
    return None if signer is None else (signer.base, signer.kid, signer.secret)


def sketch_links(sketch: Sketch) -> dict[str, str] | None:
    """The same sizes for a sketch's result, once there is one."""
    signer = _current.get()
    if signer is None or sketch.result_key is None:
        return None
    return _size_links(signer, f"sketch/{sketch.id}")


# The option strings of the link sizes, built once: a page of images signs three per image.
_LINK_OPTIONS = {
    name: Options(width=side, height=side).canonical() for name, side in LINK_SIZES.items()
}


# Signed links by (base URL, minting key, source): they never expire and depend on nothing
# else, so a gallery paging through the same images signs each once. Bounded, oldest out.
_SIGNED: dict[tuple[str, str, bytes, str], dict[str, str]] = {}
SIGNED_CACHE_SIZE = 4096


def _size_links(signer: _Signer, source: str) -> dict[str, str]:
    key = (signer.base, signer.kid, signer.secret, source)
    links = _SIGNED.get(key)
    if links is None:
        links = _sign_size_links(signer.keys, signer.base, source)
        if len(_SIGNED) >= SIGNED_CACHE_SIZE:
            del _SIGNED[next(iter(_SIGNED))]
        _SIGNED[key] = links
    return dict(links)


def _sign_size_links(keys: dict[str, bytes], base: str, source: str) -> dict[str, str]:
    return {
        name: base + signing.signed_path(keys, text, source) for name, text in _LINK_OPTIONS.items()
    }


def image_url(
    settings: Settings,
    image_id: uuid.UUID,
    *,
    fmt: str,
    quality: int | None = None,
    side: int | None = None,
) -> str:
    """A signed, non-expiring URL of an image re-encoded as ``fmt``: whole (batch outputs), or
    fitted inside ``side`` × ``side`` (their thumbnails)."""
    options = Options(width=side, height=side, format=fmt, quality=quality)  # type: ignore[arg-type]
    return sign(settings, options, Source("image", image_id))


# --- serving -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    content_type: str
    etag: str
    cache_control: str
    vary: bool
    data: bytes | None  # None: the client's copy is current (304)


def negotiate(requested: str, accept: str) -> encoding.OutputFormat:
    if requested != "auto":
        return requested  # type: ignore[return-value]
    accepted = set()
    for part in accept.lower().split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params):
            continue
        accepted.add(media)
    if "image/avif" in accepted and encoding.avif_available():
        return "avif"
    if "image/webp" in accepted:
        return "webp"
    return "jpeg"


def derivative_key(source: Source, options: Options, fmt: str, quality: int) -> str:
    variant = f"{source.path()}|{options.variant()}|{fmt}|q{quality}"
    digest = hashlib.sha256(variant.encode()).hexdigest()[:40]
    return f"delivery/{source.kind}/{source.id}/{digest}.{encoding.EXTENSIONS[fmt]}"


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    # If-None-Match compares weakly (RFC 9110 13.1.2): W/"x" matches "x".
    return any(tag.strip().removeprefix("W/") == f'"{etag}"' for tag in header.split(","))


@dataclass(frozen=True)
class _Origin:
    """What rendering needs to know about a source that still exists."""

    key: str
    width: int
    height: int
    image_id: uuid.UUID
    sketch_id: uuid.UUID | None
    # An image's original is read back checked against its record (size and SHA-256), as every
    # other reader does; a sketch result has no such record and is read as stored.
    blob: Blob | None = None


async def _origin(session: AsyncSession, source: Source) -> _Origin | None:
    if source.kind == "image":
        image = await images.find_image(session, source.id)
        blob = await images.blob_of(session, image) if image is not None else None
        if image is None or blob is None:
            return None
        return _Origin(blob.storage_key, blob.width, blob.height, image.id, None, blob)
    sketch = await sketches.find_sketch(session, source.id)
    if sketch is None or sketch.result_key is None or not sketch.width or not sketch.height:
        return None
    return _Origin(sketch.result_key, sketch.width, sketch.height, sketch.image_id, sketch.id)


def _render(
    data: bytes,
    spec: transform.Spec,
    decode_side: int,
    fmt: encoding.OutputFormat,
    quality: int,
    max_pixels: int,
) -> bytes:
    alpha = fmt in encoding.ALPHA_FORMATS
    pixels = _decode(data, max_side=decode_side, max_pixels=max_pixels, alpha=alpha)
    out = transform.apply(pixels, spec, transparent=alpha)
    return encoding.encode(out, fmt, quality)


async def _find(db: Database, key: str) -> Derivative | None:
    async with db.sessionmaker() as session:
        return await session.scalar(select(Derivative).where(Derivative.key == key))


@dataclass(frozen=True)
class Deps:
    db: Database
    storage: Storage
    redis: Redis
    settings: Settings


async def serve(
    deps: Deps,
    *,
    signed: str,
    rest: str,
    accept: str,
    if_none_match: str | None,
) -> Served:
    settings = deps.settings
    try:
        options, source = signing.verify(signing.keyring(settings), signed, rest)
    except signing.SignatureError:
        raise DeliveryForbidden("This URL is not signed by this server.") from None
    except signing.OptionsError as exc:
        raise AppError(str(exc), code="delivery.bad_options", status=400) from None
    now = int(time.time())
    if options.expires is not None and options.expires <= now:
        raise DeliveryForbidden("This URL has expired.", code="delivery.expired")
    problem = _check_bounds(options, settings)
    if problem is not None:
        raise DeliveryForbidden(problem, code="delivery.out_of_bounds")

    fmt = negotiate(options.format, accept)
    quality = options.quality or settings.delivery_default_quality
    key = derivative_key(source, options, fmt, quality)
    cache_control = IMMUTABLE
    if options.expires is not None:
        # A cache must not keep serving the URL after it expires.
        cache_control = f"public, max-age={options.expires - now}"

    vary = options.format == "auto"
    try:
        # The hit path touches storage only: an object under the variant's key exists only
        # while its source does (deletion removes it), so no database query is needed.
        cached: _Rendered = _stored(fmt, await deps.storage.get(key))
    except ObjectNotFound:
        cached = await _render_once(deps, source, options, fmt, quality, key)
    fresh = _etag_matches(if_none_match, cached.etag)
    return Served(
        cached.content_type, cached.etag, cache_control, vary, None if fresh else cached.data
    )


@dataclass(frozen=True)
class _Rendered:
    content_type: str
    etag: str
    data: bytes


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _stored(fmt: str, data: bytes) -> _Rendered:
    return _Rendered(encoding.CONTENT_TYPES[fmt], _etag(data), data)


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


async def _render_once(
    deps: Deps,
    source: Source,
    options: Options,
    fmt: encoding.OutputFormat,
    quality: int,
    key: str,
) -> _Rendered:
    lock = f"delivery:lock:{key}"
    token = uuid.uuid4().hex
    deadline = time.monotonic() + deps.settings.delivery_render_wait_seconds
    waited = False
    while not await deps.redis.set(lock, token, nx=True, px=_LOCK_TTL_MS):
        # Another request (here or on another instance) is rendering this variant.
        waited = True
        await asyncio.sleep(_POLL_SECONDS)
        try:
            return _stored(fmt, await deps.storage.get(key))
        except ObjectNotFound:
            pass
        if time.monotonic() > deadline:
            log.warning("delivery.lock_wait_timeout", key=key)
            break
    try:
        if waited:
            # The lock came free: its holder may have stored the variant just now.
            try:
                return _stored(fmt, await deps.storage.get(key))
            except ObjectNotFound:
                pass
        return await _render_and_store(deps, source, options, fmt, quality, key)
    finally:
        # Release only our own lock, in one step: a lock that expired may be another
        # renderer's now, and a GET then DEL could delete theirs in between.
        await deps.redis.eval(_RELEASE, 1, lock, token)


async def _render_and_store(
    deps: Deps,
    source: Source,
    options: Options,
    fmt: encoding.OutputFormat,
    quality: int,
    key: str,
) -> _Rendered:
    settings = deps.settings
    async with deps.db.sessionmaker() as session:
        origin = await _origin(session, source)
    if origin is None:
        raise SourceGone("The image or sketch behind this URL no longer exists.")
    try:
        if origin.blob is not None:
            data = await read_original(deps.storage, origin.blob)
        else:
            data = await deps.storage.get(origin.key)
    except ObjectNotFound:
        raise SourceGone("The image or sketch behind this URL no longer exists.") from None
    except OriginalChanged:
        raise AppError(
            "The stored original no longer matches its record; it is not served.",
            code="delivery.source_changed",
            status=409,
        ) from None
    spec = transform.Spec(
        width=options.width,
        height=options.height,
        fit=options.fit,
        gravity=options.gravity,
        max_side=settings.delivery_max_side,
        max_pixels=settings.delivery_max_pixels,
    )
    side = transform.decode_side(origin.width, origin.height, spec)
    content_type = encoding.CONTENT_TYPES[fmt]
    started = time.perf_counter()
    # The row is written while the pixels are worked on (its commit costs as much as an encode
    # on SQLite); it only says where an object may be, so it can come first.
    recording = asyncio.create_task(_record(deps.db, key, origin, content_type))
    try:
        encoded = await run_pixels(
            _render, data, spec, side, fmt, quality, settings.max_image_pixels
        )
    except ValueError as exc:
        await recording
        raise AppError(
            f"The source could not be rendered: {exc}", code="delivery.render_failed", status=422
        ) from None
    except BaseException:
        recording.cancel()
        raise
    if not await recording:
        raise SourceGone("The image or sketch behind this URL no longer exists.")
    await deps.storage.put(key, encoded, content_type=content_type, cache_control=IMMUTABLE)
    if await _find(deps.db, key) is None:
        # The source was deleted while we rendered, and its derivatives' objects possibly
        # removed before ours was stored: nothing would ever delete this one, so do it now.
        await deps.storage.delete(key)
        raise SourceGone("The image or sketch behind this URL no longer exists.")
    log.info(
        "delivery.rendered",
        key=key,
        bytes=len(encoded),
        ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return _stored(fmt, encoded)


async def _record(db: Database, key: str, origin: _Origin, content_type: str) -> bool:
    """Record the derivative; False when its source is gone (the foreign key refuses it)."""
    try:
        async with db.sessionmaker() as session:
            session.add(
                Derivative(
                    key=key,
                    image_id=origin.image_id,
                    sketch_id=origin.sketch_id,
                    content_type=content_type,
                )
            )
            await commit(session)
    except IntegrityError:
        # Either another renderer recorded it first, or the source was deleted meanwhile.
        return await _find(db, key) is not None
    return True


# --- deletion hooks --------------------------------------------------------------------------


async def _keys_of_image(session: AsyncSession, image_id: uuid.UUID) -> list[str]:
    """Derivatives of an image and of its sketches; their rows go by cascade, the objects after
    the deleting transaction commits (images' delete does that with these keys)."""
    keys = await session.scalars(select(Derivative.key).where(Derivative.image_id == image_id))
    return list(keys)


async def _keys_of_sketch(session: AsyncSession, sketch_id: uuid.UUID) -> list[str]:
    keys = await session.scalars(select(Derivative.key).where(Derivative.sketch_id == sketch_id))
    return list(keys)


images.register_derived_keys(_keys_of_image)
images.register_image_links(image_links, context=link_context)
sketches.register_derived_keys(_keys_of_sketch)
sketches.register_sketch_links(sketch_links)
