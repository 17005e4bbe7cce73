"""The one outbound HTTP request of the service: POST an event to a receiver, safely.

- The destination's name is resolved once; if ANY address it resolves to is loopback, private,
  link-local (cloud metadata at 169.254.169.254 included), CGNAT, multicast, reserved,
  unspecified or otherwise not globally routable — IPv4 and IPv6 alike, including IPv4 inside
  IPv6 (v4-mapped, NAT64, 6to4, Teredo) — the request is refused before any socket connects,
  unless ``webhooks.allow_private_destinations`` (or the address is in ``allowed_networks``).
- The connection goes to that checked address (pinned): no second lookup a rebinding DNS server
  could answer differently. ``Host`` and TLS SNI / certificate checks use the name.
- Connect and read timeouts, and a whole-attempt budget that closes the socket however slowly
  the receiver trickles; redirects are never followed (a 3xx is a failed attempt); at most
  ``max_response_bytes`` of the answer are read; proxy variables are not consulted.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from upload_service.settings import WebhookSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
#: Cloud metadata services, named so refusals say what they protect.
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, DigitalOcean
    ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
}


class DestinationRefused(Exception):
    """The URL or an address it resolves to is not a destination we send to."""


@dataclass(frozen=True)
class SendResult:
    status_code: int | None
    latency_ms: int
    error: str | None
    body_excerpt: bytes = b""

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


def address_refusal(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination (None: it is)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = address_refusal(embedded)
            return f"{reason} (IPv4 inside IPv6)" if reason else None
        if address in _NAT64_LOCAL:
            return "local-use NAT64"
    if address in _METADATA:
        return "cloud metadata"
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "shared address space (CGNAT)"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not globally routable"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(address))
    return None


@dataclass(frozen=True)
class DestinationPolicy:
    allow_private: bool
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def of(cls, settings: WebhookSettings) -> DestinationPolicy:
        return cls(settings.allow_private_destinations, tuple(ipaddress.ip_network(n) for n in settings.allowed_networks))

    def refusal(self, address: IPAddress) -> str | None:
        if self.allow_private or any(address in network for network in self.allowed_networks):
            return None
        return address_refusal(address)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # the name (or literal) for Host and SNI
    port: int
    path: str


def parse_url(url: str) -> Target:
    """An ``http``/``https`` URL without credentials; ValueError otherwise."""
    if len(url) > 2048:
        raise ValueError("the URL is longer than 2048 characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ValueError("the URL contains spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("the URL must be http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the URL must not carry credentials")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError("the URL's port is not a number from 1 to 65535") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, parts.hostname, port, path)


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve_checked(
    target: Target, policy: DestinationPolicy, resolver: Resolver = system_resolver, timeout: float | None = None
) -> str:
    """The address to connect to: every address of the name must pass ``policy``. With a
    ``timeout``, a lookup that takes longer is a refusal (the OS resolver has no deadline)."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = _resolve(resolver, target.host, target.port, timeout)
        except (OSError, UnicodeError) as exc:
            raise DestinationRefused(f"cannot resolve {target.host}: {exc}") from None
        if not addresses:
            raise DestinationRefused(f"{target.host} resolves to no address")
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        reason = policy.refusal(address)
        if reason is not None:
            raise DestinationRefused(f"{target.host} resolves to a {reason} address ({address})")
    return addresses[0]


def _resolve(resolver: Resolver, host: str, port: int, timeout: float | None) -> list[str]:
    if timeout is None:
        return resolver(host, port)
    outcome: list[list[str] | BaseException] = []

    def lookup() -> None:
        try:
            outcome.append(resolver(host, port))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome.append(exc)

    thread = threading.Thread(target=lookup, name="webhook-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise OSError(f"no answer within {timeout:g} s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def check_url(url: str, policy: DestinationPolicy, resolver: Resolver = system_resolver) -> None:
    """At endpoint creation: the URL's form, and its address now (delivery checks again)."""
    resolve_checked(parse_url(url), policy, resolver)


@dataclass(frozen=True)
class HttpLimits:
    connect_timeout: float
    read_timeout: float
    attempt_timeout: float
    max_response_bytes: int

    @classmethod
    def of(cls, settings: WebhookSettings) -> HttpLimits:
        return cls(
            settings.connect_timeout_seconds, settings.read_timeout_seconds,
            settings.attempt_timeout_seconds, settings.max_response_bytes,
        )


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    policy: DestinationPolicy,
    limits: HttpLimits,
    *,
    resolver: Resolver = system_resolver,
) -> SendResult:
    """POST ``body``; never raises for a network or receiver fault (it is in the result)."""
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target = parse_url(url)
        address = resolve_checked(target, policy, resolver, timeout=limits.connect_timeout)
    except (ValueError, DestinationRefused) as exc:
        return SendResult(None, elapsed(), f"refused: {exc}")
    connection = _pinned_connection(target, address, limits)
    timer = threading.Timer(limits.attempt_timeout, _abort, args=(connection,))
    timer.daemon = True
    timer.start()
    try:
        connection.request("POST", target.path, body=body, headers={**headers, "Connection": "close"})
        response = connection.getresponse()
        excerpt = response.read(limits.max_response_bytes) if limits.max_response_bytes else b""
        status = response.status
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if not timer.is_alive():
            return SendResult(None, elapsed(), f"no answer within {limits.attempt_timeout:g} s")
        return SendResult(None, elapsed(), _describe(exc))
    finally:
        timer.cancel()
        connection.close()
    if 300 <= status < 400:
        return SendResult(status, elapsed(), f"HTTP {status}: redirects are not followed", excerpt)
    if not 200 <= status < 300:
        return SendResult(status, elapsed(), f"HTTP {status}", excerpt)
    return SendResult(status, elapsed(), None, excerpt)


def _pinned_connection(target: Target, address: str, limits: HttpLimits) -> http.client.HTTPConnection:
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        connection = http.client.HTTPSConnection(
            target.host, target.port, timeout=limits.read_timeout, context=_tls_context()
        )
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=limits.read_timeout)

    def connect_pinned(_address: object, _timeout: object = None, _source: object = None) -> socket.socket:
        sock = socket.create_connection((address, target.port), timeout=limits.connect_timeout)
        sock.settimeout(limits.read_timeout)
        return sock

    # http.client connects through this hook; HTTPS then wraps the socket with the NAME as SNI.
    connection._create_connection = connect_pinned  # type: ignore[attr-defined]
    return connection


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's CAs, hostname checks on: built once (loading CAs takes milliseconds)."""
    return ssl.create_default_context()


def _abort(connection: http.client.HTTPConnection) -> None:
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"[:200]
    return f"{type(exc).__name__}: {exc}"[:200]
