"""Signed webhook deliveries with retries.

A delivery POSTs a compact JSON body with ``X-Atelier-Signature: t=<unix>,v1=<hex>``, where the
hex is HMAC-SHA256 over ``"<t>." + body`` keyed by the user's webhook secret. Receivers verify
it with ``verify`` (or the same few lines in their language) and reject stale timestamps, which
stops a captured request from being replayed later.

The transport is injected (``send``), so the SSRF policy lives in one place, the fetcher, and
tests need no network.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

SIGNATURE_HEADER = "X-Atelier-Signature"
DELIVERY_HEADER = "X-Atelier-Delivery"
USER_AGENT = "Atelier-Webhooks/1.0"
SIGNATURE_SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300

# Status codes that say "try again later" rather than "no".
_RETRY_STATUSES = frozenset({408, 429})
_MAX_ERROR_CHARS = 500
# Twelve digits is the year 33658: anything longer is garbage, and int() of a huge digit
# string is slow, so it is refused before conversion.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")

Sender = Callable[[str, bytes, dict[str, str]], Awaitable[int]]


@dataclass(frozen=True)
class Attempt:
    number: int  # 1-based
    status_code: int | None  # None when no response was received
    duration_ms: int
    error: str | None
    delivered: bool


# --- signatures ------------------------------------------------------------------------------


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    message = f"{timestamp}.".encode("ascii") + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, *, timestamp: int) -> str:
    """The ``X-Atelier-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    if not secret:
        raise ValueError("a webhook secret is required")
    if timestamp < 0:
        raise ValueError("timestamp must not be negative")
    return f"t={timestamp},{SIGNATURE_SCHEME}={_digest(secret, body, timestamp)}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    now: int,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds of ``now``.

    Several ``v1`` entries are accepted (any may match), so a sender can sign with an old and
    a new secret while a secret is being rotated. Unknown schemes are ignored; anything that is
    not ``key=value`` pairs, or lacks exactly one timestamp, is refused.
    """
    if not secret:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not key:
            return False
        if key == "t":
            if timestamp is not None or not _TIMESTAMP.fullmatch(value):
                return False
            timestamp = int(value)
        elif key == SIGNATURE_SCHEME:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    # Future timestamps are stale too: a clock far ahead would otherwise extend the window.
    if abs(now - timestamp) > tolerance:
        return False
    expected = _digest(secret, body, timestamp).encode("ascii")
    matched = False
    for candidate in candidates:
        if _HEX_DIGEST.fullmatch(candidate):
            # Every candidate is compared, so the time taken does not reveal which one matched.
            matched |= hmac.compare_digest(expected, candidate.encode("ascii"))
    return matched


# --- delivery --------------------------------------------------------------------------------


def encode_body(payload: dict[str, Any]) -> bytes:
    """Compact JSON with sorted keys: the exact bytes that are signed and sent."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_json_default).encode(
        "utf-8"
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def backoff_delays(
    delivery_id: str, retries: int, *, base_delay: float, max_delay: float
) -> list[float]:
    """Seconds to wait before each retry: doubling from ``base_delay``, capped at ``max_delay``,
    each drawn from the upper half of its step.

    The jitter keeps many receivers' retries from arriving in lockstep after an outage; seeding
    it from the delivery id makes one delivery's schedule reproducible (and testable).
    """
    rng = random.Random(delivery_id)
    delays = []
    for retry in range(retries):
        step = min(max_delay, base_delay * 2.0**retry)
        delays.append(step / 2 + rng.uniform(0.0, step / 2))
    return delays


async def deliver(
    url: str,
    payload: dict[str, Any],
    *,
    secret: str,
    send: Sender,
    attempts: int = 5,
    base_delay: float = 1.0,
    max_delay: float = 60.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    now: Callable[[], float] = time.time,
    delivery_id: str | None = None,
) -> list[Attempt]:
    """POST ``payload`` to ``url`` until a 2xx, a refusal, or ``attempts`` tries; every try is
    returned, in order.

    A 2xx ends the delivery. A 3xx or a 4xx other than 408/429 is the receiver's answer and is
    not retried (redirects are not followed for webhooks: re-sending the body elsewhere is the
    receiver's configuration problem, not ours to guess). 5xx, 408, 429 and transport errors
    are retried with backoff. An exception whose ``retryable`` attribute is False (an address
    the SSRF policy refuses) ends the delivery at once: retrying cannot change the answer.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    if base_delay < 0 or max_delay < 0:
        raise ValueError("delays must not be negative")
    body = encode_body(payload)
    delivery = delivery_id or str(uuid.uuid4())
    delays = backoff_delays(delivery, attempts - 1, base_delay=base_delay, max_delay=max_delay)

    results: list[Attempt] = []
    for number in range(1, attempts + 1):
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            DELIVERY_HEADER: delivery,
            # Signed afresh each time: a retry minutes later must still be within the
            # receiver's freshness window.
            SIGNATURE_HEADER: sign(secret, body, timestamp=int(now())),
        }
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        retry: bool
        try:
            status = await send(url, body, headers)
        except Exception as exc:
            error = _describe(exc)
            retry = getattr(exc, "retryable", True) is not False
        else:
            retry = _retryable_status(status)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        duration_ms = round((time.perf_counter() - started) * 1000)
        delivered = error is None
        results.append(Attempt(number, status, duration_ms, error, delivered))
        if delivered or not retry or number == attempts:
            break
        await sleep(delays[number - 1])
    return results


def _retryable_status(status: int) -> bool:
    if 200 <= status < 500:
        return status in _RETRY_STATUSES
    # 5xx, and anything outside HTTP's range, which only a broken receiver sends.
    return True


def _describe(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    label = code if isinstance(code, str) and code else type(exc).__name__
    described = f"{label}: {exc}" if str(exc) else label
    return described[:_MAX_ERROR_CHARS]
