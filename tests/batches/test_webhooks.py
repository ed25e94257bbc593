"""Webhook signatures and deliveries, with a scripted receiver and an injected clock and sleep."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import re
import uuid
from dataclasses import dataclass, field

import pytest

from backend.batches.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    Attempt,
    backoff_delays,
    deliver,
    encode_body,
    sign,
    verify,
)

SECRET = "whsec_" + "ab12" * 12
BODY = b'{"batch_id":"42","status":"succeeded"}'
T0 = 1_760_000_000
URL = "https://hooks.example.com/atelier"
PAYLOAD = {
    "batch_id": "5b0f6c1e-2a4e-4a4b-9d0e-6f7b8a9c0d1e",
    "status": "succeeded",
    "total_images": 3,
    "processed_images": 3,
    "failed_images": 1,
    "finished_at": "2025-10-09T08:00:00Z",
}


def expected_signature(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


# --- sign / verify ---------------------------------------------------------------------------


def test_signature_format_is_exact() -> None:
    header = sign(SECRET, BODY, timestamp=T0)

    assert re.fullmatch(r"t=1760000000,v1=[0-9a-f]{64}", header)
    assert header == expected_signature(SECRET, BODY, T0)


def test_round_trip() -> None:
    header = sign(SECRET, BODY, timestamp=T0)

    assert verify(SECRET, header, BODY, now=T0)
    assert verify(SECRET, header, BODY, now=T0 + 300)
    assert verify(SECRET, header, BODY, now=T0 - 300)


@pytest.mark.parametrize(
    ("secret", "body", "now"),
    [
        (SECRET, BODY + b" ", T0),
        (SECRET, BODY.replace(b"42", b"43"), T0),
        (SECRET, b"", T0),
        (SECRET + "x", BODY, T0),
        ("", BODY, T0),
        (SECRET, BODY, T0 + 301),
        (SECRET, BODY, T0 - 301),
        (SECRET, BODY, T0 + 86_400),
    ],
    ids=[
        "body-appended",
        "body-changed",
        "body-empty",
        "wrong-secret",
        "no-secret",
        "stale",
        "future",
        "day-old",
    ],
)
def test_rejected(secret: str, body: bytes, now: int) -> None:
    assert not verify(secret, sign(SECRET, BODY, timestamp=T0), body, now=now)


def test_tolerance_is_configurable() -> None:
    header = sign(SECRET, BODY, timestamp=T0)

    assert not verify(SECRET, header, BODY, now=T0 + 61, tolerance=60)
    assert verify(SECRET, header, BODY, now=T0 + 3600, tolerance=3600)


def test_timestamp_is_part_of_the_signed_message() -> None:
    digest = sign(SECRET, BODY, timestamp=T0).split(",v1=")[1]

    assert not verify(SECRET, f"t={T0 + 1},v1={digest}", BODY, now=T0)


GOOD_DIGEST = expected_signature(SECRET, BODY, T0).split(",v1=")[1]


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"v1={GOOD_DIGEST}",
        f"t={T0}",
        f"t={T0},v1=",
        f"t=,v1={GOOD_DIGEST}",
        f"t=abc,v1={GOOD_DIGEST}",
        f"t=-{T0},v1={GOOD_DIGEST}",
        f"t={T0}.0,v1={GOOD_DIGEST}",
        f"t=1e9,v1={GOOD_DIGEST}",
        f"t={'9' * 5000},v1={GOOD_DIGEST}",
        f"t={T0},t={T0},v1={GOOD_DIGEST}",
        f"t={T0};v1={GOOD_DIGEST}",
        f"t={T0},v1={GOOD_DIGEST.upper()}",
        f"t={T0},v1={GOOD_DIGEST[:-1]}",
        f"t={T0},v1={GOOD_DIGEST}0",
        f"t={T0},v0={GOOD_DIGEST}",
        f"t={T0},,v1={GOOD_DIGEST}",
        f"t={T0},v1={GOOD_DIGEST[:-1]}é",
        f"t=١٧٦٠٠٠٠٠٠٠,v1={GOOD_DIGEST}",
    ],
)
def test_malformed_headers_are_rejected(header: str) -> None:
    assert not verify(SECRET, header, BODY, now=T0)


def test_header_tolerates_spaces_unknown_schemes_and_rotated_secrets() -> None:
    old = expected_signature("old-secret", BODY, T0).split(",v1=")[1]

    assert verify(SECRET, f"t={T0}, v1={GOOD_DIGEST}", BODY, now=T0)
    assert verify(SECRET, f"t={T0},v0=whatever,v1={GOOD_DIGEST}", BODY, now=T0)
    assert verify(SECRET, f"t={T0},v1={old},v1={GOOD_DIGEST}", BODY, now=T0)
    assert verify("old-secret", f"t={T0},v1={old},v1={GOOD_DIGEST}", BODY, now=T0)


def test_sign_refuses_an_empty_secret_and_negative_time() -> None:
    with pytest.raises(ValueError, match="secret"):
        sign("", BODY, timestamp=T0)
    with pytest.raises(ValueError, match="timestamp"):
        sign(SECRET, BODY, timestamp=-1)


def test_body_is_compact_sorted_json() -> None:
    when = dt.datetime(2025, 10, 9, 8, 0, tzinfo=dt.UTC)
    ident = uuid.UUID(int=7)

    body = encode_body({"z": 1, "a": [1, 2], "when": when, "id": ident, "name": "café"})

    assert body == (
        b'{"a":[1,2],"id":"00000000-0000-0000-0000-000000000007","name":"caf\\u00e9",'
        b'"when":"2025-10-09T08:00:00+00:00","z":1}'
    )
    with pytest.raises(TypeError):
        encode_body({"x": object()})


# --- deliver ---------------------------------------------------------------------------------


class TransportError(Exception):
    """Shaped like fetch.FetchError: a code and whether retrying can help."""

    def __init__(self, message: str, *, code: str, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


@dataclass
class Call:
    url: str
    body: bytes
    headers: dict[str, str]
    sent_at: int


@dataclass
class Receiver:
    """Answers with the scripted status codes or raises the scripted exceptions, in order; the
    last entry repeats. Also the clock: each sleep moves time forward by the slept amount."""

    script: list[int | BaseException]
    clock: float = float(T0)
    calls: list[Call] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)

    async def send(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        self.calls.append(Call(url, body, dict(headers), int(self.clock)))
        outcome = self.script[min(len(self.calls), len(self.script)) - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock += seconds

    def now(self) -> float:
        return self.clock


async def run(
    receiver: Receiver,
    *,
    attempts: int = 5,
    base_delay: float = 1.0,
    max_delay: float = 60.0,
    delivery_id: str | None = None,
) -> list[Attempt]:
    return await deliver(
        URL,
        PAYLOAD,
        secret=SECRET,
        send=receiver.send,
        attempts=attempts,
        base_delay=base_delay,
        max_delay=max_delay,
        sleep=receiver.sleep,
        now=receiver.now,
        delivery_id=delivery_id,
    )


def assert_backoff(sleeps: list[float], base_delay: float, max_delay: float) -> None:
    for retry, seconds in enumerate(sleeps):
        step = min(max_delay, base_delay * 2**retry)
        assert step / 2 <= seconds <= step


async def test_delivered_first_time() -> None:
    receiver = Receiver([200])

    attempts = await run(receiver)

    assert len(attempts) == 1
    first = attempts[0]
    assert (first.number, first.status_code, first.error, first.delivered) == (1, 200, None, True)
    assert first.duration_ms >= 0
    assert receiver.sleeps == []
    call = receiver.calls[0]
    assert call.url == URL
    assert json.loads(call.body) == PAYLOAD
    assert call.body == encode_body(PAYLOAD)
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["User-Agent"].startswith("Atelier")
    uuid.UUID(call.headers[DELIVERY_HEADER])
    assert verify(SECRET, call.headers[SIGNATURE_HEADER], call.body, now=call.sent_at)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
async def test_any_2xx_is_delivered(status: int) -> None:
    attempts = await run(Receiver([status]))

    assert [a.delivered for a in attempts] == [True]


async def test_500_then_200() -> None:
    receiver = Receiver([500, 200])

    attempts = await run(receiver, base_delay=2.0)

    assert [(a.number, a.status_code, a.delivered) for a in attempts] == [
        (1, 500, False),
        (2, 200, True),
    ]
    assert attempts[0].error == "HTTP 500"
    assert attempts[1].error is None
    assert len(receiver.sleeps) == 1
    assert_backoff(receiver.sleeps, 2.0, 60.0)


async def test_always_500_gives_up_after_the_attempts() -> None:
    receiver = Receiver([503])

    attempts = await run(receiver, attempts=4, base_delay=1.0)

    assert [a.number for a in attempts] == [1, 2, 3, 4]
    assert not any(a.delivered for a in attempts)
    assert {a.status_code for a in attempts} == {503}
    # No pointless wait after the last attempt.
    assert len(receiver.sleeps) == 3
    assert_backoff(receiver.sleeps, 1.0, 60.0)
    assert receiver.sleeps[2] > receiver.sleeps[0]


async def test_backoff_is_capped() -> None:
    receiver = Receiver([500])

    await run(receiver, attempts=8, base_delay=5.0, max_delay=12.0)

    assert len(receiver.sleeps) == 7
    assert_backoff(receiver.sleeps, 5.0, 12.0)
    assert max(receiver.sleeps) <= 12.0


async def test_jitter_is_seeded_by_the_delivery_id() -> None:
    first, again, other = Receiver([500]), Receiver([500]), Receiver([500])

    await run(first, delivery_id="delivery-1")
    await run(again, delivery_id="delivery-1")
    await run(other, delivery_id="delivery-2")

    assert first.sleeps == again.sleeps
    assert first.sleeps != other.sleeps
    assert first.sleeps == backoff_delays("delivery-1", 4, base_delay=1.0, max_delay=60.0)
    assert first.calls[0].headers[DELIVERY_HEADER] == "delivery-1"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422, 301, 302])
async def test_refusals_are_not_retried(status: int) -> None:
    receiver = Receiver([status, 200])

    attempts = await run(receiver)

    assert [(a.status_code, a.delivered) for a in attempts] == [(status, False)]
    assert attempts[0].error == f"HTTP {status}"
    assert receiver.sleeps == []


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 100, 600])
async def test_temporary_statuses_are_retried(status: int) -> None:
    attempts = await run(Receiver([status, 204]))

    assert [(a.status_code, a.delivered) for a in attempts] == [(status, False), (204, True)]


async def test_transport_errors_are_retried() -> None:
    receiver = Receiver(
        [
            ConnectionRefusedError("connection refused"),
            TransportError("timed out after 10s", code="fetch.timeout", retryable=True),
            TimeoutError(),
            200,
        ]
    )

    attempts = await run(receiver)

    assert [(a.status_code, a.delivered) for a in attempts] == [
        (None, False),
        (None, False),
        (None, False),
        (200, True),
    ]
    assert attempts[0].error == "ConnectionRefusedError: connection refused"
    assert attempts[1].error == "fetch.timeout: timed out after 10s"
    assert attempts[2].error == "TimeoutError"
    assert len(receiver.sleeps) == 3


async def test_unreachable_host_ends_failed_after_the_retries() -> None:
    receiver = Receiver([OSError("no route to host")])

    attempts = await run(receiver, attempts=3)

    assert len(attempts) == 3
    assert all(a.status_code is None and not a.delivered for a in attempts)
    assert all(a.error and "no route to host" in a.error for a in attempts)


async def test_non_retryable_error_stops_at_once() -> None:
    refusal = TransportError(
        "169.254.169.254 is a link-local address", code="fetch.blocked_address", retryable=False
    )
    receiver = Receiver([refusal, 200])

    attempts = await run(receiver)

    assert attempts == [
        Attempt(
            number=1,
            status_code=None,
            duration_ms=attempts[0].duration_ms,
            error="fetch.blocked_address: 169.254.169.254 is a link-local address",
            delivered=False,
        )
    ]
    assert receiver.sleeps == []
    assert len(receiver.calls) == 1


async def test_long_errors_are_truncated() -> None:
    attempts = await run(Receiver([RuntimeError("x" * 5000), 200]))

    assert attempts[0].error is not None
    assert len(attempts[0].error) <= 500


async def test_every_attempt_is_signed_with_its_own_timestamp() -> None:
    receiver = Receiver([500])

    # At least 60 + 120 + 240 s pass between the first and the last attempt.
    await run(receiver, attempts=4, base_delay=120.0, max_delay=600.0)

    timestamps = []
    for call in receiver.calls:
        header = call.headers[SIGNATURE_HEADER]
        timestamp = int(header.split(",")[0].removeprefix("t="))
        timestamps.append(timestamp)
        assert timestamp == call.sent_at
        assert verify(SECRET, header, call.body, now=call.sent_at)
        assert header == sign(SECRET, call.body, timestamp=timestamp)
    assert timestamps == sorted(timestamps)
    assert len(set(timestamps)) == 4
    # The first signature has gone stale by the last attempt; the re-signed one has not.
    last = receiver.calls[-1]
    assert not verify(
        SECRET, receiver.calls[0].headers[SIGNATURE_HEADER], last.body, now=last.sent_at
    )


async def test_delivery_id_is_stable_across_retries_and_unique_per_delivery() -> None:
    first, second = Receiver([500, 500, 200]), Receiver([200])

    await run(first)
    await run(second)

    ids = {call.headers[DELIVERY_HEADER] for call in first.calls}
    assert len(first.calls) == 3
    assert len(ids) == 1
    assert ids != {second.calls[0].headers[DELIVERY_HEADER]}
    assert {call.body for call in first.calls} == {first.calls[0].body}


async def test_duration_is_measured() -> None:
    async def slow(_url: str, _body: bytes, _headers: dict[str, str]) -> int:
        await asyncio.sleep(0.03)
        return 200

    attempts = await deliver(URL, PAYLOAD, secret=SECRET, send=slow)

    assert attempts[0].duration_ms >= 25


async def test_cancellation_is_not_swallowed() -> None:
    with pytest.raises(asyncio.CancelledError):
        await run(Receiver([asyncio.CancelledError()]))


async def test_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="attempts"):
        await run(Receiver([200]), attempts=0)


async def test_real_sleep_is_used_by_default() -> None:
    # The default sleep really waits: a tiny base delay keeps the test fast.
    receiver = Receiver([500, 200])

    attempts = await deliver(
        URL, PAYLOAD, secret=SECRET, send=receiver.send, base_delay=0.01, max_delay=0.02
    )

    assert [a.delivered for a in attempts] == [False, True]
