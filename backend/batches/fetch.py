"""Outbound HTTP that cannot be turned against internal networks: batch images and webhooks.

Every request goes through the same steps:

1. ``check_url``: static checks on the URL (scheme, host, userinfo, port, IP literals in every
   spelling a resolver accepts), no network.
2. ``resolve``: the host's addresses; if any answer is a blocked address the request is refused.
3. The request is sent to one of the checked addresses (the URL's host replaced by the address),
   with the original ``Host`` header and the host name for TLS SNI and certificate checks. There
   is no second lookup, so a DNS answer that changes between check and connect (rebinding) has
   nothing to change.
4. Redirects are followed by hand, each target going through steps 1-3 again.

Bytes and time are bounded: bodies are streamed and cut at the limit, and the whole exchange
runs under one deadline. A fresh transport is used per request so that no connection made for
one host name is reused for another on the same address.

Tests replace ``_getaddrinfo`` (the resolver), ``_new_transport`` (to watch or fake where
requests go) and ``_ssl_context`` (to trust a local certificate).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, cast
from urllib.parse import urlsplit

import httpx

from backend.images.validation import sniff_format

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

USER_AGENT = "AtelierFetcher/1.0"
# A webhook receiver's answer is only read to free the connection; its content is not used.
WEBHOOK_RESPONSE_LIMIT = 64 * 1024
MAX_URL_CHARS = 8192

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Enough leading bytes for every signature sniff_format knows (WebP needs 12).
_SNIFF_BYTES = 16
# Host names that resolve to loopback by definition (RFC 6761), whatever DNS says.
_LOOPBACK_NAMES = ("localhost",)
# Letters, digits, hyphen and underscore labels; anything else (percent escapes, spaces) is not
# a host name a resolver should be handed.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOST_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_NUMBER = re.compile(r"^(?:0[xX][0-9a-fA-F]*|[0-9]+)$")

_V4_BLOCKED = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT, includes Alibaba's metadata 100.100.100.200
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, includes the 169.254.169.254 metadata service
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments, includes Oracle's metadata 192.0.0.192
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",  # reserved, includes the broadcast address
    )
)
_V6_BLOCKED = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/96",  # unspecified, loopback and the deprecated IPv4-compatible form
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments, includes Teredo 2001::/32
        "2001:db8::/32",
        "3fff::/20",  # documentation (RFC 9637)
        "fc00::/7",  # unique local, includes AWS's metadata fd00:ec2::254
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 20 * 1024 * 1024
    connect_timeout: float = 5.0
    total_timeout: float = 30.0
    max_redirects: int = 5
    allowed_ports: frozenset[int] = frozenset({80, 443})
    # Test-only: host names/IPs on loopback the tests may fetch from (any port). Empty by
    # default; Settings refuses it outside dev/test.
    allow_loopback_hosts: frozenset[str] = frozenset()


class FetchError(Exception):
    """A refused or failed fetch; ``code`` is stable, ``retryable`` says whether trying the
    same URL later may succeed."""

    def __init__(self, message: str, *, code: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments are not in ``args``; without this the error cannot cross a
        # process boundary (task results, logging handlers that pickle).
        return (_rebuild_error, (str(self), self.code, self.retryable))


def _rebuild_error(message: str, code: str, retryable: bool) -> FetchError:
    return FetchError(message, code=code, retryable=retryable)


@dataclass(frozen=True)
class Fetched:
    url: str
    final_url: str
    status: int
    content_type: str
    data: bytes


# --- addresses ------------------------------------------------------------------------------


def is_blocked_ip(ip: IPAddress) -> bool:
    """True for every address a server-side fetch must never reach."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_blocked_ip(embedded)
        if ip.sixtofour is not None and is_blocked_ip(ip.sixtofour):
            return True
        if ip.teredo is not None and any(is_blocked_ip(v4) for v4 in ip.teredo):
            return True
        # Only global unicast is ever a legitimate destination; the explicit list and the
        # properties below cover the special ranges inside it.
        if ip not in _V6_GLOBAL_UNICAST or ip.is_site_local:
            return True
        nets: tuple[ipaddress.IPv4Network, ...] | tuple[ipaddress.IPv6Network, ...] = _V6_BLOCKED
    else:
        nets = _V4_BLOCKED
    if ip in _METADATA or any(ip in net for net in nets):
        return True
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a mapped or NAT64 address actually reaches."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    # A DNS64/NAT64 network hands out these for IPv4-only hosts; the gateway connects to the
    # embedded address, so that is the one to judge.
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _is_loopback(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _loose_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a resolver (inet_aton) or a browser reads from ``host``.

    Accepts one to four parts, each decimal, octal (leading 0) or hex (0x), the last part
    filling the remaining bytes: 2130706433, 0177.0.0.1, 0x7f.1 and 127.1 are all 127.0.0.1.
    Returns None for a host name; raises ValueError for a host that ends in a number but is no
    valid address (a browser refuses those too, and a resolver would send them to DNS).
    """
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if not parts or not _NUMBER.match(parts[-1]):
        return None
    if len(parts) > 4:
        raise ValueError(f"too many parts in numeric host {host!r}")
    values = []
    for part in parts:
        if not _NUMBER.match(part):
            raise ValueError(f"non-numeric part in numeric host {host!r}")
        if part[:2] in ("0x", "0X"):
            values.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part.startswith("0"):
            values.append(int(part, 8))  # ValueError for 8 or 9, as inet_aton refuses them
        else:
            values.append(int(part))
    *leading, last = values
    if any(v > 255 for v in leading) or last >= 256 ** (5 - len(values)):
        raise ValueError(f"numeric host {host!r} out of range")
    number = last
    for index, value in enumerate(leading):
        number += value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any accepted form; None for a host name.

    Raises FetchError(bad_url) for malformed numeric hosts and IPv6 zone identifiers."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in text:
        address, percent, _zone = text.partition("%")
        try:
            ip = ipaddress.IPv6Address(address)
        except ValueError as exc:
            raise FetchError(f"invalid IPv6 address {host!r}", code="fetch.bad_url") from exc
        if percent:
            # A zone names a local interface: meaningless for a remote host, and link-local
            # addresses (the only ones that need one) are blocked anyway.
            code = "fetch.blocked_address" if is_blocked_ip(ip) else "fetch.bad_url"
            raise FetchError(f"IPv6 zone identifiers are not allowed: {host!r}", code=code)
        return ip
    try:
        return _loose_ipv4(text)
    except ValueError as exc:
        raise FetchError(f"invalid numeric host {host!r}", code="fetch.bad_url") from exc


def _host_key(host: str) -> str:
    """One spelling per host, so the loopback allowance matches whatever form a URL used."""
    host = host.strip().lower()
    try:
        ip = _ip_literal(host)
    except FetchError:
        ip = None
    if ip is not None:
        return str(ip)
    return host[:-1] if host.endswith(".") else host


def _loopback_allowed(host: str, policy: FetchPolicy) -> bool:
    if not policy.allow_loopback_hosts:
        return False
    return _host_key(host) in {_host_key(h) for h in policy.allow_loopback_hosts}


def _check_address(ip: IPAddress, host: str, policy: FetchPolicy) -> None:
    if not is_blocked_ip(ip):
        return
    if _is_loopback(ip) and _loopback_allowed(host, policy):
        return
    raise FetchError(f"{host!r} is or resolves to a blocked address", code="fetch.blocked_address")


# --- URL checks -----------------------------------------------------------------------------


def check_url(url: str, policy: FetchPolicy) -> httpx.URL:
    """Static checks; returns the URL to request, an IP literal host in its canonical form."""
    if not url.strip() or len(url) > MAX_URL_CHARS:
        raise FetchError("URL empty or too long", code="fetch.bad_url")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise _unparseable(url, exc) from exc
    if parsed.scheme not in _DEFAULT_PORTS:
        raise FetchError(f"scheme {parsed.scheme!r} is not allowed", code="fetch.bad_scheme")
    if parsed.userinfo:
        raise FetchError("URLs with credentials are not allowed", code="fetch.bad_url")
    # The ASCII (punycode) form: what DNS, the Host header and SNI all carry.
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise FetchError("URL has no host", code="fetch.bad_url")

    # Address checks come before the port so that a probe of an internal service is reported
    # as what it is, not as a port problem.
    ip = _ip_literal(host)
    if ip is not None:
        _check_address(ip, host, policy)
        canonical = str(ip)
        if canonical != host:
            parsed = parsed.copy_with(host=canonical)
    else:
        name = host[:-1] if host.endswith(".") else host
        if not _HOST_NAME.match(name):
            raise FetchError(f"invalid host name {host!r}", code="fetch.bad_url")
        if _is_loopback_name(name) and not _loopback_allowed(host, policy):
            raise FetchError(f"{host!r} is a loopback name", code="fetch.blocked_address")

    port = _port(parsed)
    if not 0 < port < 65536:
        raise FetchError(f"invalid port {port}", code="fetch.bad_url")
    if port not in policy.allowed_ports and not _loopback_allowed(host, policy):
        raise FetchError(f"port {port} is not allowed", code="fetch.bad_port")
    return parsed


def _unparseable(url: str, exc: Exception) -> FetchError:
    # httpx refuses some numeric hosts outright (0177.0.0.1): report what they point at rather
    # than a generic parse error, when the URL is otherwise readable.
    try:
        host = urlsplit(url).hostname or ""
        ip = _ip_literal(host)
    except (ValueError, FetchError):
        ip = None
    if ip is not None and is_blocked_ip(ip):
        return FetchError(f"{url!r} points at a blocked address", code="fetch.blocked_address")
    return FetchError(f"invalid URL: {exc}", code="fetch.bad_url")


def _is_loopback_name(name: str) -> bool:
    return any(name == n or name.endswith("." + n) for n in _LOOPBACK_NAMES)


# --- resolution -----------------------------------------------------------------------------


async def _getaddrinfo(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for ``host``; replaced in tests."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


async def resolve(host: str, port: int, policy: FetchPolicy) -> list[str]:
    """Every address of ``host``, all checked; refused if any one is blocked.

    One blocked answer refuses the host even when others are fine: which answer a later
    connection would use is not ours to predict, and a name that mixes internal and public
    addresses is suspicious in itself."""
    ip = _ip_literal(host)
    if ip is not None:
        _check_address(ip, host, policy)
        return [str(ip)]
    if _is_loopback_name(_host_key(host)) and not _loopback_allowed(host, policy):
        raise FetchError(f"{host!r} is a loopback name", code="fetch.blocked_address")
    try:
        async with asyncio.timeout(policy.connect_timeout):
            answers = await _getaddrinfo(host, port)
    except TimeoutError as exc:
        raise FetchError(
            f"resolving {host!r} timed out", code="fetch.timeout", retryable=True
        ) from exc
    except (OSError, UnicodeError) as exc:
        raise FetchError(
            f"could not resolve {host!r}: {exc}", code="fetch.dns_failed", retryable=True
        ) from exc
    addresses: list[str] = []
    for answer in answers:
        try:
            resolved = ipaddress.ip_address(answer)
        except ValueError as exc:
            raise FetchError(
                f"resolver answered {answer!r} for {host!r}", code="fetch.dns_failed"
            ) from exc
        _check_address(resolved, host, policy)
        if str(resolved) not in addresses:
            addresses.append(str(resolved))
    if not addresses:
        raise FetchError(f"no address for {host!r}", code="fetch.dns_failed", retryable=True)
    return addresses


# --- transport ------------------------------------------------------------------------------


@cache
def _ssl_context() -> ssl.SSLContext:
    # certifi's bundle, never SSL_CERT_FILE or friends from the environment.
    return httpx.create_ssl_context(trust_env=False)


def _new_transport() -> httpx.AsyncBaseTransport:
    # A transport never reads proxy settings from the environment (only a Client does), has no
    # cookie jar and follows no redirects: everything it does is spelled out here.
    return httpx.AsyncHTTPTransport(verify=_ssl_context(), retries=0)


def _port(url: httpx.URL) -> int:
    return url.port if url.port is not None else _DEFAULT_PORTS[url.scheme]


@asynccontextmanager
async def _exchange(
    method: str,
    url: httpx.URL,
    policy: FetchPolicy,
    *,
    headers: Mapping[str, str],
    content: bytes | None = None,
) -> AsyncIterator[httpx.Response]:
    """Send one request to a checked address of ``url``'s host; the response is streamed.

    ``url`` must come from check_url."""
    host = url.raw_host.decode("ascii")
    addresses = await resolve(host, _port(url), policy)
    pinned_headers = {
        **headers,
        # netloc keeps a non-default port and the brackets of an IPv6 literal.
        "Host": url.netloc.decode("ascii"),
        "User-Agent": USER_AGENT,
    }
    extensions: dict[str, Any] = {
        "timeout": {
            "connect": policy.connect_timeout,
            "read": policy.total_timeout,
            "write": policy.total_timeout,
            "pool": policy.connect_timeout,
        }
    }
    if _ip_literal(host) is None:
        extensions["sni_hostname"] = host

    failure: httpx.HTTPError | None = None
    for address in addresses:
        request = httpx.Request(
            method,
            url.copy_with(host=address),
            headers=pinned_headers,
            content=content,
            extensions=extensions,
        )
        transport = _new_transport()
        try:
            response = await transport.handle_async_request(request)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # Nothing was sent yet, so the next checked address is as safe to try as this one.
            await transport.aclose()
            failure = exc
            continue
        except BaseException as exc:
            await transport.aclose()
            if isinstance(exc, httpx.HTTPError):
                raise _transport_error(exc, url) from exc
            raise
        response.request = request
        try:
            yield response
        except httpx.HTTPError as exc:
            raise _transport_error(exc, url) from exc
        finally:
            await response.aclose()
            await transport.aclose()
        return
    if failure is None:  # resolve() never answers an empty list; this keeps that explicit
        raise FetchError(f"no address to connect to for {host!r}", code="fetch.dns_failed")
    raise _transport_error(failure, url) from failure


def _transport_error(exc: httpx.HTTPError, url: httpx.URL) -> FetchError:
    where = f"{url.scheme}://{url.netloc.decode('ascii')}"
    if isinstance(exc, httpx.TimeoutException):
        return FetchError(f"{where} timed out", code="fetch.timeout", retryable=True)
    if _caused_by(exc, ssl.SSLCertVerificationError):
        # A certificate that does not match will not match on the next attempt either.
        return FetchError(
            f"{where}: certificate verification failed", code="fetch.connection_failed"
        )
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return FetchError(f"{where}: {exc}", code="fetch.bad_url")
    return FetchError(f"{where}: {exc}", code="fetch.connection_failed", retryable=True)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


# --- image fetching -------------------------------------------------------------------------


async def fetch_image(url: str, policy: FetchPolicy) -> Fetched:
    """Download one image under ``policy``; raises FetchError with a stable code."""
    try:
        async with asyncio.timeout(policy.total_timeout):
            return await _fetch_image(url, policy)
    except TimeoutError as exc:
        raise FetchError(
            f"fetching {url!r} took longer than {policy.total_timeout:g} s",
            code="fetch.timeout",
            retryable=True,
        ) from exc


async def _fetch_image(url: str, policy: FetchPolicy) -> Fetched:
    current = check_url(url, policy)
    visited = {str(current)}
    headers = {
        "Accept": "image/*",
        # A compressed body would be inflated in memory before the byte limit could see it;
        # images gain nothing from transfer compression anyway.
        "Accept-Encoding": "identity",
    }
    redirects = 0
    while True:
        async with _exchange("GET", current, policy, headers=headers) as response:
            if response.status_code not in _REDIRECTS:
                _require_success(response, current)
                content_type = _require_image_type(response, current)
                data = await _read_image(response, policy.max_bytes, current)
                return Fetched(
                    url=url,
                    final_url=str(current),
                    status=response.status_code,
                    content_type=content_type,
                    data=data,
                )
            location = response.headers.get("location")
        if redirects >= policy.max_redirects:
            raise FetchError(
                f"more than {policy.max_redirects} redirects from {url!r}",
                code="fetch.too_many_redirects",
            )
        redirects += 1
        current = check_url(_redirect_target(current, location), policy)
        if str(current) in visited:
            raise FetchError(f"redirect loop at {str(current)!r}", code="fetch.redirect_invalid")
        visited.add(str(current))


def _redirect_target(current: httpx.URL, location: str | None) -> str:
    if not location or not location.strip():
        raise FetchError(
            f"redirect from {str(current)!r} without a Location", code="fetch.redirect_invalid"
        )
    try:
        return str(current.join(location.strip()))
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise FetchError(
            f"redirect from {str(current)!r} to an invalid Location", code="fetch.redirect_invalid"
        ) from exc


def _require_success(response: httpx.Response, url: httpx.URL) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    raise FetchError(
        f"{str(url)!r} answered HTTP {status}",
        code="fetch.http_status",
        retryable=status >= 500 or status == 429,
    )


def _require_image_type(response: httpx.Response, url: httpx.URL) -> str:
    raw = response.headers.get("content-type", "")
    media_type = raw.split(";", 1)[0].strip().lower()
    if not media_type.startswith("image/"):
        raise FetchError(
            f"{str(url)!r} is {media_type or 'untyped'}, not an image",
            code="fetch.bad_content_type",
        )
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchError(
            f"{str(url)!r} sent a {encoding}-encoded body", code="fetch.bad_content_type"
        )
    return media_type


def _raw_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    # httpx annotates this as an iterator, but it is a generator; closing it explicitly when a
    # limit stops the loop early releases the stream now rather than at garbage collection.
    return cast(AsyncGenerator[bytes, None], response.aiter_raw())


def _too_large(url: httpx.URL, limit: int) -> FetchError:
    return FetchError(f"{str(url)!r} is larger than {limit} bytes", code="fetch.too_large")


async def _read_image(response: httpx.Response, limit: int, url: httpx.URL) -> bytes:
    declared = response.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(url, limit)
    chunks: list[bytes] = []
    size = 0
    sniffed = False
    async with aclosing(_raw_chunks(response)) as stream:
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise _too_large(url, limit)
            chunks.append(chunk)
            # Judge the signature as soon as it has arrived, not after megabytes of HTML.
            if not sniffed and size >= _SNIFF_BYTES:
                _require_signature(b"".join(chunks), url)
                sniffed = True
    data = b"".join(chunks)
    if not sniffed:
        _require_signature(data, url)
    return data


def _require_signature(head: bytes, url: httpx.URL) -> None:
    if sniff_format(head) is None:
        raise FetchError(
            f"{str(url)!r} is not a JPEG, PNG, WebP or GIF image", code="fetch.not_an_image"
        )


# --- webhooks -------------------------------------------------------------------------------

# Framing and routing stay ours: a caller's value for these could desynchronise the request or
# point it elsewhere.
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "user-agent"}
)


async def post_json(url: str, body: bytes, *, headers: dict[str, str], policy: FetchPolicy) -> int:
    """POST ``body`` to ``url`` under the same address rules; returns the status code.

    Redirects are not followed (a 3xx is just the answer), and at most
    WEBHOOK_RESPONSE_LIMIT bytes of the response are read and discarded."""
    try:
        async with asyncio.timeout(policy.total_timeout):
            target = check_url(url, policy)
            sent = {"Content-Type": "application/json"}
            sent.update({k: v for k, v in headers.items() if k.lower() not in _RESERVED_HEADERS})
            async with _exchange("POST", target, policy, headers=sent, content=body) as response:
                await _discard(response, WEBHOOK_RESPONSE_LIMIT)
                return response.status_code
    except TimeoutError as exc:
        raise FetchError(
            f"posting to {url!r} took longer than {policy.total_timeout:g} s",
            code="fetch.timeout",
            retryable=True,
        ) from exc


async def _discard(response: httpx.Response, limit: int) -> None:
    read = 0
    async with aclosing(_raw_chunks(response)) as stream:
        async for chunk in stream:
            read += len(chunk)
            if read >= limit:
                # Closing the response drops the connection; the rest is never read.
                return
