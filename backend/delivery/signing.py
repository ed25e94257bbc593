"""Signed delivery URLs: the canonical option string, the HMAC over it, and its verification.

A URL is ``{PUBLIC_BASE_URL}/d/{kid}.{sig}/{options}/{kind}/{id}`` where ``options`` is the
canonical path (``w:400/h:300/fit:cover/g:smart/fmt:webp/q:80/exp:1790000000``: keys in that
order, ``w``, ``h``, ``q`` and ``exp`` only when set, ``fit``, ``g`` and ``fmt`` always), ``kind``
is ``image`` or ``sketch``, and ``sig`` is the unpadded base64url HMAC-SHA256, under the secret
named by ``kid``, of ``{options}/{kind}/{id}``: everything after the signature, as imgproxy does.
No commas, so lists of URLs (a product CSV's output column) stay unambiguous. Pure: no HTTP,
storage or database here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal, get_args

from backend.config import Settings

Fit = Literal["inside", "cover", "contain"]
Gravity = Literal["center", "smart"]
Format = Literal["auto", "jpeg", "png", "webp", "avif"]
SourceKind = Literal["image", "sketch"]

DERIVED_KID = "k0"
_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_INT = re.compile(r"^[1-9][0-9]{0,11}$")


class SignatureError(ValueError):
    """The URL was not signed by one of our keys (or was changed since)."""


class OptionsError(ValueError):
    """A correctly signed option string that is not one we understand."""


@dataclass(frozen=True)
class Options:
    width: int | None = None
    height: int | None = None
    fit: Fit = "inside"
    gravity: Gravity = "center"
    format: Format = "auto"
    quality: int | None = None
    expires: int | None = None  # unix seconds

    def canonical(self) -> str:
        parts = []
        if self.width is not None:
            parts.append(f"w:{self.width}")
        if self.height is not None:
            parts.append(f"h:{self.height}")
        parts += [f"fit:{self.fit}", f"g:{self.gravity}", f"fmt:{self.format}"]
        if self.quality is not None:
            parts.append(f"q:{self.quality}")
        if self.expires is not None:
            parts.append(f"exp:{self.expires}")
        return "/".join(parts)

    def variant(self) -> str:
        """What the pixels depend on: the canonical options without the expiry."""
        return replace(self, expires=None).canonical()


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    id: uuid.UUID

    def path(self) -> str:
        return f"{self.kind}/{self.id}"


def parse_options(text: str) -> Options:
    """Options from their canonical string; anything else (other order, spacing) is refused,
    so one variant has exactly one URL and caches in front of us store it once."""
    values: dict[str, str] = {}
    for part in text.split("/"):
        name, sep, value = part.partition(":")
        if not sep or name in values:
            raise OptionsError(f"malformed option {part!r}")
        values[name] = value
    unknown = set(values) - {"w", "h", "fit", "g", "fmt", "q", "exp"}
    if unknown:
        raise OptionsError(f"unknown options: {', '.join(sorted(unknown))}")

    def number(name: str) -> int | None:
        raw = values.get(name)
        if raw is None:
            return None
        if not _INT.match(raw):
            raise OptionsError(f"option {name} must be a positive integer")
        return int(raw)

    fit, gravity, fmt = values.get("fit"), values.get("g"), values.get("fmt")
    if fit not in get_args(Fit) or gravity not in get_args(Gravity) or fmt not in get_args(Format):
        raise OptionsError("fit, g and fmt must be present with known values")
    options = Options(
        width=number("w"),
        height=number("h"),
        fit=fit,  # type: ignore[arg-type]
        gravity=gravity,  # type: ignore[arg-type]
        format=fmt,  # type: ignore[arg-type]
        quality=number("q"),
        expires=number("exp"),
    )
    if options.quality is not None and options.quality > 100:
        raise OptionsError("option q must be between 1 and 100")
    if options.canonical() != text:
        raise OptionsError("options are not in canonical form")
    return options


def parse_source(kind: str, ident: str) -> Source:
    if kind not in get_args(SourceKind):
        raise OptionsError("the source must be image/{id} or sketch/{id}")
    try:
        parsed = uuid.UUID(ident)
    except ValueError:
        raise OptionsError("the source id is not a UUID") from None
    if str(parsed) != ident:
        raise OptionsError("the source id is not in canonical form")
    return Source(kind, parsed)  # type: ignore[arg-type]


def keyring(settings: Settings) -> dict[str, bytes]:
    """Delivery keys by id, the minting one first. Without DELIVERY_KEYS, one derived key.

    Parsed once per configuration (a page of images signs dozens of links): the answer is
    shared, so callers must not change it."""
    configured = settings.delivery_keys
    return _keyring(settings.secret, None if configured is None else configured.get_secret_value())


@lru_cache(maxsize=8)
def _keyring(secret: str, delivery_keys: str | None) -> dict[str, bytes]:
    if delivery_keys is None:
        derived = hmac.new(secret.encode(), b"atelier-delivery-v1", hashlib.sha256)
        return {DERIVED_KID: derived.hexdigest().encode()}
    keys: dict[str, bytes] = {}
    for entry in delivery_keys.split(","):
        kid, sep, key = entry.strip().partition(":")
        if not sep or not _KID.match(kid) or len(key) < 16 or kid in keys:
            raise ValueError(
                "ATELIER_DELIVERY_KEYS must be 'kid:secret,…' with kids of [A-Za-z0-9_-] and "
                "secrets of at least 16 characters"
            )
        keys[kid] = key.encode()
    return keys


@lru_cache(maxsize=16)
def _keyed(secret: bytes) -> hmac.HMAC:
    # An HMAC with its key already absorbed: copying it skips the key padding and the two
    # block hashes that hmac.new does for every signature.
    return hmac.new(secret, digestmod=hashlib.sha256)


def signature(secret: bytes, options: str, source: str) -> str:
    mac = _keyed(secret).copy()
    mac.update(f"{options}/{source}".encode())
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def sign_path(keys: dict[str, bytes], options: Options, source: Source) -> str:
    """The URL path (``/d/…``) for ``options`` on ``source``, signed with the minting key."""
    return signed_path(keys, options.canonical(), source.path())


def signed_path(keys: dict[str, bytes], options: str, source: str) -> str:
    """``sign_path`` from the canonical option string and ``kind/id``, for callers that sign
    the same options for many sources (a page of images)."""
    kid, secret = next(iter(keys.items()))
    return f"/d/{kid}.{signature(secret, options, source)}/{options}/{source}"


def verify(keys: dict[str, bytes], signed: str, rest: str) -> tuple[Options, Source]:
    """``signed`` is ``{kid}.{sig}``, ``rest`` the path after it. The signature is checked
    first: nothing unsigned is ever interpreted."""
    kid, _, sig = signed.partition(".")
    secret = keys.get(kid)
    options_text, _, source = rest.rpartition("/")
    options_text, _, kind = options_text.rpartition("/")
    if secret is None or not sig or not options_text:
        raise SignatureError("unknown key id or incomplete URL")
    expected = signature(secret, options_text, f"{kind}/{source}")
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        raise SignatureError("bad signature")
    return parse_options(options_text), parse_source(kind, source)
