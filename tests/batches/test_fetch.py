"""The SSRF-safe fetcher against a real loopback origin, and every probe it must refuse.

No test here sends a packet beyond loopback, and none asks real DNS: the autouse ``net``
fixture replaces the fetcher's resolver with one that answers only what a test scripted (any
other lookup fails the test) and wraps its transport so that a request to anything but a
loopback address, or to a host name instead of the checked address, fails the test before a
connection is made.
"""

from __future__ import annotations

import asyncio
import ipaddress
import pickle
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from backend.batches import fetch
from backend.batches.fetch import (
    USER_AGENT,
    FetchError,
    FetchPolicy,
    check_url,
    fetch_image,
    is_blocked_ip,
    post_json,
    resolve,
)
from tests.batches.origin import Origin

MiB = 1024 * 1024
LOOPBACK = FetchPolicy(
    allow_loopback_hosts=frozenset({"127.0.0.1"}), connect_timeout=2.0, total_timeout=10.0
)
STRICT = FetchPolicy()
PUBLIC = "93.184.215.14"  # a public address: only ever handed to a fake transport
# The real functions, before the autouse fixture replaces them.
REAL_TRANSPORT = fetch._new_transport
REAL_GETADDRINFO = fetch._getaddrinfo


# --- the network guard -------------------------------------------------------------------------


class FakeResolver:
    """Answers scripted lookups in order (the last answer repeats); any other lookup fails."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.calls: list[str] = []

    def script(self, host: str, *answers: list[str]) -> None:
        self.answers[host] = list(answers)

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        queue = self.answers.get(host)
        if not queue:
            pytest.fail(f"unexpected DNS lookup of {host!r}:{port}")
        return queue.pop(0) if len(queue) > 1 else queue[0]


@dataclass(frozen=True)
class Target:
    """Where one request went: the address connected to, and the name it carried."""

    address: str
    port: int | None
    host_header: str | None
    sni: str | None


@dataclass
class Net:
    resolver: FakeResolver
    targets: list[Target] = field(default_factory=list)
    inner: Callable[[], httpx.AsyncBaseTransport] = REAL_TRANSPORT


class GuardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, net: Net) -> None:
        self._net = net
        self._inner = net.inner()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        target = Target(
            host,
            request.url.port,
            request.headers.get("host"),
            request.extensions.get("sni_hostname"),
        )
        self._net.targets.append(target)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            pytest.fail(f"request addressed by name {host!r}, not by the checked address")
        if not address.is_loopback and self._net.inner is REAL_TRANSPORT:
            pytest.fail(f"a test tried to connect to {address}")
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class Body(httpx.AsyncByteStream):
    """A streamed body for fake responses (a ``content=`` body arrives already read)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._data


@pytest.fixture(autouse=True)
def net(monkeypatch: pytest.MonkeyPatch) -> Net:
    resolver = FakeResolver()
    state = Net(resolver)
    monkeypatch.setattr(fetch, "_getaddrinfo", resolver)
    monkeypatch.setattr(fetch, "_new_transport", lambda: GuardedTransport(state))
    return state


@pytest.fixture
def origin() -> Iterator[Origin]:
    with Origin() as server:
        yield server


def loopback_for(*hosts: str, **overrides: float | int) -> FetchPolicy:
    return FetchPolicy(
        allow_loopback_hosts=frozenset(hosts),
        connect_timeout=float(overrides.pop("connect_timeout", 2.0)),
        total_timeout=float(overrides.pop("total_timeout", 10.0)),
        max_bytes=int(overrides.pop("max_bytes", 20 * MiB)),
        max_redirects=int(overrides.pop("max_redirects", 5)),
    )


async def refused(url: str, policy: FetchPolicy = STRICT) -> FetchError:
    with pytest.raises(FetchError) as caught:
        await fetch_image(url, policy)
    return caught.value


# --- fetching from the loopback origin ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/image.jpg", "image/jpeg"), ("/image.png", "image/png"), ("/image.gif", "image/gif")],
)
async def test_good_image_is_fetched(
    origin: Origin, net: Net, path: str, content_type: str
) -> None:
    url = origin.url(path)
    got = await fetch_image(url, LOOPBACK)

    expected = {"/image.jpg": origin.jpeg, "/image.png": origin.png, "/image.gif": origin.gif}
    assert got.data == expected[path]
    assert (got.url, got.final_url, got.status, got.content_type) == (url, url, 200, content_type)
    [seen] = origin.requests
    assert seen.host == f"127.0.0.1:{origin.port}"
    assert seen.headers["user-agent"] == USER_AGENT
    assert "cookie" not in seen.headers
    assert net.targets == [Target("127.0.0.1", origin.port, f"127.0.0.1:{origin.port}", None)]


async def test_announced_huge_body_is_refused_before_reading(origin: Origin) -> None:
    error = await refused(origin.url("/huge.jpg"), loopback_for("127.0.0.1", max_bytes=MiB))

    assert error.code == "fetch.too_large"
    assert not error.retryable
    origin.wait_idle()
    # Only what the kernel buffers took before the client hung up, far from the 50 MB.
    assert origin.requests[0].bytes_sent < 16 * MiB


async def test_unannounced_huge_body_is_cut_at_the_limit(origin: Origin) -> None:
    error = await refused(
        origin.url("/huge-unannounced.jpg"), loopback_for("127.0.0.1", max_bytes=MiB)
    )

    assert error.code == "fetch.too_large"
    origin.wait_idle()
    assert origin.requests[0].bytes_sent < 16 * MiB


async def test_endless_body_is_cut_at_the_limit(origin: Origin) -> None:
    started = time.monotonic()
    error = await refused(origin.url("/endless.jpg"), loopback_for("127.0.0.1", max_bytes=MiB))

    assert error.code == "fetch.too_large"
    assert time.monotonic() - started < 5
    origin.wait_idle()
    assert origin.requests[0].bytes_sent < 16 * MiB


async def test_limit_is_inclusive(origin: Origin) -> None:
    exact = loopback_for("127.0.0.1", max_bytes=len(origin.jpeg))
    assert (await fetch_image(origin.url("/image.jpg"), exact)).data == origin.jpeg

    short = loopback_for("127.0.0.1", max_bytes=len(origin.jpeg) - 1)
    assert (await refused(origin.url("/image.jpg"), short)).code == "fetch.too_large"


async def test_slow_body_times_out(origin: Origin) -> None:
    started = time.monotonic()
    error = await refused(
        origin.url("/slow.jpg?interval=0.05"), loopback_for("127.0.0.1", total_timeout=0.5)
    )

    assert (error.code, error.retryable) == ("fetch.timeout", True)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/wrong/html-type", "fetch.bad_content_type"),
        ("/wrong/no-type", "fetch.bad_content_type"),
        ("/wrong/gzip", "fetch.bad_content_type"),
        ("/wrong/html-body", "fetch.not_an_image"),
    ],
)
async def test_wrong_content_is_refused(origin: Origin, path: str, code: str) -> None:
    error = await refused(origin.url(path), LOOPBACK)

    assert (error.code, error.retryable) == (code, False)


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (404, False), (403, False)]
)
async def test_error_status(origin: Origin, status: int, retryable: bool) -> None:
    error = await refused(origin.url(f"/status/{status}"), LOOPBACK)

    assert (error.code, error.retryable) == ("fetch.http_status", retryable)
    assert str(status) in str(error)


# --- redirects ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_chain_within_the_limit_is_followed(origin: Origin, status: int) -> None:
    url = origin.url(f"/redirect/5?status={status}")
    got = await fetch_image(url, LOOPBACK)

    assert got.data == origin.jpeg
    assert (got.url, got.final_url) == (url, origin.url("/image.jpg"))
    assert len(origin.requests) == 6
    assert {seen.method for seen in origin.requests} == {"GET"}


async def test_redirect_chain_over_the_limit_is_refused(origin: Origin) -> None:
    error = await refused(origin.url("/redirect/6"), LOOPBACK)

    assert error.code == "fetch.too_many_redirects"
    # The sixth redirect is seen but not followed: /image.jpg is never asked for.
    assert len(origin.requests) == 6


async def test_redirect_limit_comes_from_the_policy(origin: Origin) -> None:
    policy = loopback_for("127.0.0.1", max_redirects=0)
    assert (await refused(origin.url("/redirect/1"), policy)).code == "fetch.too_many_redirects"
    assert (await fetch_image(origin.url("/image.jpg"), policy)).data == origin.jpeg


async def test_redirect_loop_is_refused(origin: Origin) -> None:
    error = await refused(origin.url("/loop/a"), LOOPBACK)

    assert error.code == "fetch.redirect_invalid"
    assert len(origin.requests) == 2


async def test_redirect_without_location_is_refused(origin: Origin) -> None:
    assert (await refused(origin.url("/to-nowhere"), LOOPBACK)).code == "fetch.redirect_invalid"


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("http://10.0.0.1/x", "fetch.blocked_address"),
        ("http://169.254.169.254/latest/meta-data", "fetch.blocked_address"),
        ("http://[::1]/", "fetch.blocked_address"),
        ("http://[fd00:ec2::254]/latest/meta-data", "fetch.blocked_address"),
        ("http://167772161/", "fetch.blocked_address"),  # 10.0.0.1
        ("file:///etc/passwd", "fetch.bad_scheme"),
        ("gopher://127.0.0.1:6379/_INFO", "fetch.bad_scheme"),
        ("http://example.com:6379/", "fetch.bad_port"),
    ],
)
async def test_redirect_target_is_checked_like_a_url(
    origin: Origin, net: Net, target: str, code: str
) -> None:
    error = await refused(origin.url("/to?url=" + quote(target, safe="")), LOOPBACK)

    assert error.code == code
    assert len(origin.requests) == 1
    assert [t.address for t in net.targets] == ["127.0.0.1"]
    assert net.resolver.calls == []


async def test_redirect_from_allowed_host_to_loopback_name_is_refused(origin: Origin) -> None:
    # The allowance covers 127.0.0.1 only; the same origin by another name is still refused.
    for target in (
        origin.url("/image.jpg", host="localhost"),
        origin.url("/image.jpg", host="[::1]"),
    ):
        error = await refused(origin.url("/to?url=" + quote(target, safe="")), LOOPBACK)
        assert error.code == "fetch.blocked_address"


async def test_redirect_to_a_name_resolving_privately_is_refused(origin: Origin, net: Net) -> None:
    net.resolver.script("images.internal.test", ["10.20.30.40"])
    target = "http://images.internal.test/cat.jpg"

    error = await refused(origin.url("/to?url=" + quote(target, safe="")), LOOPBACK)

    assert error.code == "fetch.blocked_address"
    assert net.resolver.calls == ["images.internal.test"]
    assert [t.address for t in net.targets] == ["127.0.0.1"]


# --- SSRF probes with the allowance off -------------------------------------------------------

PROBES = [
    "http://127.0.0.1/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://api.localhost/",
    "http://[::1]/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::127.0.0.1]/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f.0.0.1/",
    "http://0x7f.1/",
    "http://0x7f000001/",
    "http://127.1/",
    "http://127.0.0.1./",
    "http://0/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1%25eth0]/",
    "http://[fe80::1]/",
    "http://100.64.0.1/",
    "http://100.100.100.200/",
    "http://192.0.0.192/",
    "http://198.18.0.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://[ff02::1]/",
    "http://[2002:7f00:1::]/",
    "http://[64:ff9b::a00:1]/",
    "https://10.0.0.1/",
    "http://10.0.0.1:6379/",  # the address is reported, not the port
]


@pytest.mark.parametrize("url", PROBES)
async def test_probe_is_refused_before_any_lookup_or_connection(url: str, net: Net) -> None:
    error = await refused(url)

    assert (error.code, error.retryable) == ("fetch.blocked_address", False)
    assert net.resolver.calls == []
    assert net.targets == []


async def test_allowance_off_refuses_the_loopback_origin_itself(origin: Origin) -> None:
    assert (await refused(origin.url("/image.jpg"))).code == "fetch.blocked_address"
    assert origin.requests == []


async def test_allowance_is_for_loopback_only() -> None:
    policy = loopback_for("127.0.0.1", "10.0.0.1", "169.254.169.254")
    for url in ("http://10.0.0.1/", "http://169.254.169.254/"):
        assert (await refused(url, policy)).code == "fetch.blocked_address"


@pytest.mark.parametrize(
    "answers",
    [
        ["10.0.0.7"],
        ["169.254.169.254"],
        ["::1"],
        ["::ffff:10.0.0.1"],
        ["fd00:ec2::254"],
        # One bad answer spoils the rest: which one a connection would use is not ours to pick.
        [PUBLIC, "10.0.0.7"],
        ["2606:4700:4700::1111", "127.0.0.1"],
    ],
)
async def test_name_resolving_to_a_blocked_address_is_refused(net: Net, answers: list[str]) -> None:
    net.resolver.script("photos.example.com", answers)

    error = await refused("https://photos.example.com/cat.jpg")

    assert error.code == "fetch.blocked_address"
    assert net.resolver.calls == ["photos.example.com"]
    assert net.targets == []


async def test_resolution_failure_is_retryable(net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(host: str, _port: int) -> list[str]:
        net.resolver.calls.append(host)
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(fetch, "_getaddrinfo", failing)

    error = await refused("https://nowhere.example.com/cat.jpg")

    assert (error.code, error.retryable) == ("fetch.dns_failed", True)
    assert net.targets == []


async def test_slow_resolution_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    async def stalled(_host: str, _port: int) -> list[str]:
        await asyncio.sleep(30)
        return [PUBLIC]

    monkeypatch.setattr(fetch, "_getaddrinfo", stalled)
    policy = FetchPolicy(connect_timeout=0.1)

    error = await refused("https://slow-dns.example.com/cat.jpg", policy)

    assert (error.code, error.retryable) == ("fetch.timeout", True)


# --- DNS rebinding: the checked address is the one connected to ------------------------------


async def test_connection_goes_to_the_checked_address_not_a_second_answer(
    net: Net, origin: Origin
) -> None:
    # The resolver answers a public address first and loopback afterwards, as a rebinding
    # attacker's DNS would. Requests go to a fake transport, so the public address is never
    # contacted; what matters is where the fetcher tried to go.
    net.resolver.script("rebind.test", [PUBLIC], ["127.0.0.1"])
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, headers={"Content-Type": "image/png"}, stream=Body(origin.png))

    net.inner = lambda: httpx.MockTransport(answer)

    got = await fetch_image("https://rebind.test/cat.png", STRICT)

    assert got.data == origin.png
    assert net.resolver.calls == ["rebind.test"]
    assert net.targets == [Target(PUBLIC, None, "rebind.test", "rebind.test")]
    assert str(sent[0].url) == f"https://{PUBLIC}/cat.png"


async def test_rebinding_against_the_live_origin(net: Net, origin: Origin) -> None:
    # One lookup answers loopback (allowed for this name); a second lookup would fail the test.
    net.resolver.script("rebind.test", ["127.0.0.1"])
    net.resolver.answers["rebind.test"].append(["10.9.8.7"])  # only reached by a re-resolution
    url = origin.url("/image.jpg", host="rebind.test")

    got = await fetch_image(url, loopback_for("rebind.test"))

    assert got.data == origin.jpeg
    assert net.resolver.calls == ["rebind.test"]
    assert origin.requests[0].host == f"rebind.test:{origin.port}"
    assert [t.address for t in net.targets] == ["127.0.0.1"]


async def test_each_redirect_is_resolved_and_checked_again(net: Net, origin: Origin) -> None:
    # Same name, second answer private: the redirect hop must see it and stop.
    net.resolver.script("rebind.test", ["127.0.0.1"], ["10.9.8.7"])
    target = origin.url("/image.jpg", host="rebind.test")
    url = origin.url("/to?url=" + quote(target, safe=""), host="rebind.test")

    error = await refused(url, loopback_for("rebind.test"))

    assert error.code == "fetch.blocked_address"
    assert net.resolver.calls == ["rebind.test", "rebind.test"]
    assert len(origin.requests) == 1


async def test_next_checked_address_is_tried_when_one_refuses(net: Net, origin: Origin) -> None:
    # Nothing listens on 127.0.0.2 (the origin binds 127.0.0.1 only); both answers are checked.
    with Origin() as closed:
        dead_port = closed.port
    net.resolver.script("multi.test", ["127.0.0.2", "127.0.0.1"])
    policy = loopback_for("multi.test")

    got = await fetch_image(origin.url("/image.jpg", host="multi.test"), policy)

    assert got.data == origin.jpeg
    assert [t.address for t in net.targets] == ["127.0.0.2", "127.0.0.1"]
    error = await refused(f"http://multi.test:{dead_port}/image.jpg", policy)
    assert (error.code, error.retryable) == ("fetch.connection_failed", True)


# --- static URL checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://example.com:22/", "https://example.com:8443/", "http://8.8.8.8:6379/"]
)
async def test_port_outside_the_allowed_set_is_refused_without_network(net: Net, url: str) -> None:
    assert (await refused(url)).code == "fetch.bad_port"
    assert net.resolver.calls == []


def test_allowed_ports_come_from_the_policy() -> None:
    assert check_url("https://example.com:8443/x", FetchPolicy(allowed_ports=frozenset({8443})))
    assert str(check_url("http://example.com:80/x", STRICT)) == "http://example.com/x"
    # The loopback allowance covers any port: tests run origins on ephemeral ones.
    assert check_url("http://127.0.0.1:54321/x", LOOPBACK).port == 54321


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/cat.jpg",
        "file:///etc/passwd",
        "gopher://example.com/",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
        "ws://example.com/",
        "example.com/cat.jpg",
    ],
)
async def test_other_schemes_are_refused(net: Net, url: str) -> None:
    assert (await refused(url)).code == "fetch.bad_scheme"
    assert net.resolver.calls == []


@pytest.mark.parametrize(
    "url",
    [
        "http://user:secret@example.com/cat.jpg",
        "http://user@example.com/cat.jpg",
        "http://:secret@example.com/cat.jpg",
        "http://example.com\\@127.0.0.1/",
    ],
)
async def test_userinfo_is_refused(net: Net, url: str) -> None:
    assert (await refused(url)).code == "fetch.bad_url"
    assert net.resolver.calls == []


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http:///cat.jpg",
        "http://exa mple.com/",
        "http://%31%32%37.0.0.1/",
        "http://256.1.1.1/",
        "http://1.2.3.4.5/",
        "http://08.0.0.1/",
        "http://example.com:99999/",
        "http://[2606:4700::1%25eth0]/",
        "http://xn--/",
        "http://example.com/" + "a" * 9000,
    ],
)
async def test_malformed_urls_are_refused(net: Net, url: str) -> None:
    assert (await refused(url)).code == "fetch.bad_url"
    assert net.resolver.calls == []


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("http://2130706433:8000/a", "http://127.0.0.1:8000/a"),
        ("http://0177.0.0.1:8000/a", None),  # httpx cannot parse it; refused as blocked
        ("http://0x7f.1:8000/a", "http://127.0.0.1:8000/a"),
        ("http://127.1:8000/a?b=1", "http://127.0.0.1:8000/a?b=1"),
        ("http://127.0.0.1:8000/a", "http://127.0.0.1:8000/a"),
    ],
)
def test_numeric_hosts_are_normalised(url: str, canonical: str | None) -> None:
    if canonical is None:
        with pytest.raises(FetchError):
            check_url(url, LOOPBACK)
    else:
        assert str(check_url(url, LOOPBACK)) == canonical


def test_public_urls_pass_the_static_check() -> None:
    assert check_url("https://cdn.example.com/a/b.jpg?x=1", STRICT).host == "cdn.example.com"
    assert check_url("https://bücher.example/x.png", STRICT).raw_host == b"xn--bcher-kva.example"
    assert check_url("http://8.8.8.8/x.png", STRICT).host == "8.8.8.8"
    assert check_url("http://134744072/x.png", STRICT).host == "8.8.8.8"
    assert check_url("http://[2606:4700:4700::1111]/x.png", STRICT).host == "2606:4700:4700::1111"


# --- address classification --------------------------------------------------------------------

BLOCKED = [
    "0.0.0.0", "0.1.2.3", "10.1.2.3", "100.64.0.1", "100.127.255.254", "100.100.100.200",
    "127.0.0.1", "127.255.255.254", "169.254.0.1", "169.254.169.254", "172.16.0.1",
    "172.31.255.255", "192.0.0.1", "192.0.0.192", "192.0.2.1", "192.88.99.1", "192.168.0.1",
    "198.18.0.1", "198.19.255.255", "198.51.100.1", "203.0.113.1", "224.0.0.1", "239.1.2.3",
    "240.0.0.1", "255.255.255.255",
    "::", "::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
    "::127.0.0.1", "::8.8.8.8", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1",
    "100::1", "2001::1", "2001:0:4136:e378:8000:63bf:80ff:fffe", "2001:db8::1",
    "2002:7f00:1::1", "2002:a00:1::1", "3fff::1", "fc00::1", "fd00:ec2::254", "fe80::1",
    "fe80::1%eth0", "fec0::1", "ff02::1", "ff0e::1", "4000::1", "1::1",
]  # fmt: skip
ALLOWED = [
    "8.8.8.8", "1.1.1.1", "93.184.215.14", "100.63.255.255", "100.128.0.0", "172.32.0.1",
    "192.0.1.1", "198.20.0.1", "223.255.255.254",
    "2606:4700:4700::1111", "2a00:1450:4001:81c::200e", "::ffff:8.8.8.8", "64:ff9b::808:808",
    "2002:808:808::1",
]  # fmt: skip


@pytest.mark.parametrize("address", BLOCKED)
def test_blocked_addresses(address: str) -> None:
    assert is_blocked_ip(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses(address: str) -> None:
    assert not is_blocked_ip(ipaddress.ip_address(address))


# --- resolve ------------------------------------------------------------------------------------


async def test_resolve_returns_every_checked_answer_once(net: Net) -> None:
    net.resolver.script("cdn.example.com", [PUBLIC, "2606:4700:4700::1111", PUBLIC])
    assert await resolve("cdn.example.com", 443, STRICT) == [PUBLIC, "2606:4700:4700::1111"]


async def test_resolve_takes_literals_without_a_lookup(net: Net) -> None:
    assert await resolve("8.8.8.8", 80, STRICT) == ["8.8.8.8"]
    assert await resolve("0x7f.1", 80, LOOPBACK) == ["127.0.0.1"]
    with pytest.raises(FetchError) as caught:
        await resolve("::1", 80, STRICT)
    assert caught.value.code == "fetch.blocked_address"
    assert net.resolver.calls == []


async def test_real_resolver_on_loopback_names(monkeypatch: pytest.MonkeyPatch) -> None:
    # The unpatched resolver, on names the system answers without the network.
    monkeypatch.setattr(fetch, "_getaddrinfo", REAL_GETADDRINFO)
    assert await fetch._getaddrinfo("127.0.0.1", 80) == ["127.0.0.1"]
    addresses = await resolve("localhost", 80, loopback_for("localhost"))
    assert addresses
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses)
    with pytest.raises(FetchError) as caught:
        await resolve("localhost", 80, STRICT)
    assert caught.value.code == "fetch.blocked_address"


# --- TLS: pinned address, certificate checked against the host name ---------------------------


def self_signed(name: str, directory: Path) -> tuple[Path, Path, str]:
    """A certificate for ``name`` and its key, as files, plus the certificate's PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, pem.decode()


@dataclass
class TlsOrigin:
    origin: Origin
    client_context: ssl.SSLContext
    server_names: list[str | None]


@pytest.fixture
def tls_origin(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TlsOrigin]:
    cert_name = getattr(request, "param", "atelier.test")
    cert_file, key_file, pem = self_signed(cert_name, tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    names: list[str | None] = []
    server.sni_callback = lambda _sock, name, _ctx: names.append(name)
    client = ssl.create_default_context(cadata=pem)
    with Origin(tls=server) as origin:
        yield TlsOrigin(origin, client, names)


async def test_tls_verifies_the_host_name_on_the_pinned_address(
    tls_origin: TlsOrigin, net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "_ssl_context", lambda: tls_origin.client_context)
    net.resolver.script("atelier.test", ["127.0.0.1"])
    origin = tls_origin.origin

    got = await fetch_image(
        origin.url("/image.png", host="atelier.test"), loopback_for("atelier.test")
    )

    assert got.data == origin.png
    assert tls_origin.server_names == ["atelier.test"]
    assert origin.requests[0].host == f"atelier.test:{origin.port}"
    assert net.targets == [
        Target("127.0.0.1", origin.port, f"atelier.test:{origin.port}", "atelier.test")
    ]


async def test_tls_by_address_fails_the_name_check(
    tls_origin: TlsOrigin, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same server and trust, but asked for by IP: the certificate does not name 127.0.0.1,
    # which shows the success above really checked the name.
    monkeypatch.setattr(fetch, "_ssl_context", lambda: tls_origin.client_context)

    error = await refused(tls_origin.origin.url("/image.png"), LOOPBACK)

    assert (error.code, error.retryable) == ("fetch.connection_failed", False)


@pytest.mark.parametrize("tls_origin", ["other.test"], indirect=True)
async def test_tls_certificate_for_another_name_is_refused(
    tls_origin: TlsOrigin, net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "_ssl_context", lambda: tls_origin.client_context)
    net.resolver.script("atelier.test", ["127.0.0.1"])
    url = tls_origin.origin.url("/image.png", host="atelier.test")

    error = await refused(url, loopback_for("atelier.test"))

    assert (error.code, error.retryable) == ("fetch.connection_failed", False)


async def test_tls_untrusted_certificate_is_refused(tls_origin: TlsOrigin, net: Net) -> None:
    net.resolver.script("atelier.test", ["127.0.0.1"])
    url = tls_origin.origin.url("/image.png", host="atelier.test")

    error = await refused(url, loopback_for("atelier.test"))

    assert error.code == "fetch.connection_failed"
    assert tls_origin.origin.requests == []


# --- post_json ------------------------------------------------------------------------------------


async def test_post_json_delivers_to_the_sink(origin: Origin) -> None:
    body = b'{"batch_id":"b1","status":"succeeded"}'
    headers = {
        "X-Atelier-Signature": "t=1,v1=ab",
        "Host": "evil.example",
        "Content-Length": "1",
        "User-Agent": "spoofed",
    }

    status = await post_json(origin.url("/hook"), body, headers=headers, policy=LOOPBACK)

    assert status == 200
    [seen] = origin.received
    assert (seen.method, seen.path, seen.body) == ("POST", "/hook", body)
    assert seen.headers["x-atelier-signature"] == "t=1,v1=ab"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["host"] == f"127.0.0.1:{origin.port}"
    assert seen.headers["user-agent"] == USER_AGENT
    assert seen.headers["content-length"] == str(len(body))


async def test_post_json_returns_scripted_statuses(origin: Origin) -> None:
    origin.answer(500, 429, 204)
    statuses = [
        await post_json(origin.url("/hook"), b"{}", headers={}, policy=LOOPBACK) for _ in range(4)
    ]

    assert statuses == [500, 429, 204, 200]
    assert len(origin.received) == 4


async def test_post_json_does_not_follow_redirects(origin: Origin) -> None:
    origin.answer(302, location="http://10.0.0.1/internal")
    origin.answer(307, location=origin.url("/elsewhere"))

    first = await post_json(origin.url("/hook"), b"{}", headers={}, policy=LOOPBACK)
    second = await post_json(origin.url("/hook"), b"{}", headers={}, policy=LOOPBACK)

    assert (first, second) == (302, 307)
    assert [seen.path for seen in origin.requests] == ["/hook", "/hook"]


async def test_post_json_reads_a_bounded_response(origin: Origin) -> None:
    status = await post_json(
        origin.url(f"/hook?body={50 * MiB}"), b"{}", headers={}, policy=LOOPBACK
    )

    assert status == 200
    origin.wait_idle()
    assert origin.received[0].bytes_sent < 16 * MiB


async def test_post_json_times_out(origin: Origin) -> None:
    policy = loopback_for("127.0.0.1", total_timeout=0.3)
    with pytest.raises(FetchError) as caught:
        await post_json(origin.url("/hook?delay=5"), b"{}", headers={}, policy=policy)

    assert (caught.value.code, caught.value.retryable) == ("fetch.timeout", True)


async def test_post_json_to_a_closed_port_fails_retryably() -> None:
    with Origin() as closed:
        url = closed.url("/hook")
    with pytest.raises(FetchError) as caught:
        await post_json(url, b"{}", headers={}, policy=LOOPBACK)

    assert (caught.value.code, caught.value.retryable) == ("fetch.connection_failed", True)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",
        "http://hooks.internal.test/hook",
    ],
)
async def test_post_json_refuses_private_targets(net: Net, url: str, origin: Origin) -> None:
    net.resolver.script("hooks.internal.test", ["192.168.10.20"])
    with pytest.raises(FetchError) as caught:
        await post_json(url, b"{}", headers={}, policy=STRICT)

    assert caught.value.code == "fetch.blocked_address"
    assert net.targets == []
    assert origin.requests == []


async def test_post_json_refuses_the_origin_with_the_allowance_off(origin: Origin) -> None:
    with pytest.raises(FetchError) as caught:
        await post_json(origin.url("/hook"), b"{}", headers={}, policy=STRICT)

    assert caught.value.code == "fetch.blocked_address"
    assert origin.received == []


# --- the error type -------------------------------------------------------------------------------


def test_fetch_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(FetchError("boom", code="fetch.timeout", retryable=True)))

    assert (str(error), error.code, error.retryable) == ("boom", "fetch.timeout", True)
