"""Outbound webhook requests: refused destinations never see a packet (the refusal happens before
any socket connects), redirects are not followed, the resolved address is pinned, and timeouts
and the response cap hold. Real sockets on loopback; refusals are asserted with the settings'
default (private destinations refused)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from upload_service.settings import WebhookSettings
from upload_service.webhooks.http import DestinationPolicy, HttpLimits, address_refusal, check_url, post

LIMITS = HttpLimits(connect_timeout=1, read_timeout=1, attempt_timeout=2, max_response_bytes=64)
REFUSING = DestinationPolicy.of(WebhookSettings())


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address a socket connects to in this test (recorded, then connected for real)."""
    seen: list[Any] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:  # what socket.create_connection calls too
        seen.append(address[:2])
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


class Server:
    """A loopback HTTP server answering with ``status`` (and ``headers``), counting requests."""

    def __init__(self, host: str = "127.0.0.1", status: int = 200, headers: dict[str, str] | None = None,
                 body: bytes = b"ok", delay: float = 0.0) -> None:
        self.requests: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.requests.append({k.lower(): v for k, v in self.headers.items()})
                time.sleep(delay)
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def loopback_server() -> Iterator[Server]:
    server = Server()
    yield server
    server.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/hook",
        "http://localhost:{port}/hook",  # a name resolving to loopback
        "http://[::ffff:127.0.0.1]:{port}/hook",  # v4-mapped v6
        "http://[::ffff:10.0.0.1]/hook",
        "http://100.64.0.1/hook",  # CGNAT
        "http://0.0.0.0:{port}/hook",
        "http://192.168.1.1/hook",
        "http://[fd00:ec2::254]/hook",
        "http://2130706433:{port}/hook",  # 127.0.0.1 as one decimal number
        "http://0x7f.1:{port}/hook",  # and in inet_aton's short hex form
    ],
)
def test_private_destinations_are_refused_before_any_connect(
    url: str, loopback_server: Server, connects: list[Any]
) -> None:
    result = post(url.format(port=loopback_server.port), b"{}", {}, REFUSING, LIMITS)
    assert not result.ok and result.status_code is None
    assert result.error is not None and result.error.startswith("refused:"), result.error
    assert connects == []  # no SYN to 10.x, 169.254.x or anywhere
    assert loopback_server.requests == []
    with pytest.raises(Exception):
        check_url(url.format(port=loopback_server.port), REFUSING)  # and refused when the endpoint is added


def test_a_name_with_any_private_address_is_refused(connects: list[Any]) -> None:
    """A rebinding-style answer mixing a public and a private address: refused, nothing sent."""
    result = post("http://hooks.example/x", b"{}", {}, REFUSING, LIMITS, resolver=lambda h, p: ["93.184.216.34", "10.0.0.1"])
    assert result.error is not None and "private" in result.error
    assert connects == []


def test_a_redirect_is_not_followed(connects: list[Any]) -> None:
    """The receiver (allowed by network) answers 302 to a loopback address: a failed attempt,
    and the redirect's target never sees a request."""
    target = Server("127.0.0.1")
    redirecting = Server("127.0.0.2", status=302, headers={"Location": target.url})
    try:
        policy = DestinationPolicy(allow_private=False, allowed_networks=(ipaddress.ip_network("127.0.0.2/32"),))
        result = post(redirecting.url, b"{}", {}, policy, LIMITS)
        assert result.status_code == 302 and not result.ok
        assert result.error is not None and "redirects are not followed" in result.error
        assert len(redirecting.requests) == 1 and target.requests == []
        assert [address[0] for address in connects] == ["127.0.0.2"]
    finally:
        target.close()
        redirecting.close()


def test_the_resolved_address_is_pinned_and_the_name_is_the_host_header(connects: list[Any]) -> None:
    server = Server("127.0.0.3")
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.3"]

    try:
        policy = DestinationPolicy(allow_private=False, allowed_networks=(ipaddress.ip_network("127.0.0.3/32"),))
        result = post(f"http://hooks.example:{server.port}/x?y=1", b"{}", {}, policy, LIMITS, resolver=resolver)
        assert result.ok, result
        assert lookups == ["hooks.example"]  # resolved once
        assert connects == [("127.0.0.3", server.port)]  # connected to the checked address
        assert server.requests[0]["host"] == f"hooks.example:{server.port}"
    finally:
        server.close()


def test_allowed_private_destinations_when_the_operator_says_so(loopback_server: Server) -> None:
    policy = DestinationPolicy.of(WebhookSettings(allow_private_destinations=True))
    result = post(loopback_server.url, b"{}", {"webhook-id": "msg_1"}, policy, LIMITS)
    assert result.ok and result.status_code == 200
    assert loopback_server.requests[0]["webhook-id"] == "msg_1"


def test_a_slow_receiver_times_out_and_the_answer_is_capped() -> None:
    policy = DestinationPolicy(allow_private=True)
    slow = Server(delay=5)
    big = Server(body=b"x" * 1_000_000)
    try:
        started = time.monotonic()
        result = post(slow.url, b"{}", {}, policy, LIMITS)
        assert result.error in ("timeout", f"no answer within {LIMITS.attempt_timeout:g} s")
        assert time.monotonic() - started < LIMITS.attempt_timeout + 1
        result = post(big.url, b"{}", {}, policy, LIMITS)
        assert result.ok and len(result.body_excerpt) == LIMITS.max_response_bytes
    finally:
        slow.close()
        big.close()


@pytest.mark.parametrize("url", ["ftp://example.com/x", "http://user:pw@example.com/x", "http:///x", "http://a b/", "file:///etc/passwd"])
def test_malformed_urls_are_refused(url: str, connects: list[Any]) -> None:
    assert post(url, b"{}", {}, REFUSING, LIMITS).error.startswith("refused:")  # type: ignore[union-attr]
    assert connects == []


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"), ("10.0.0.1", "private"), ("172.16.0.1", "private"), ("192.168.0.1", "private"),
        ("169.254.169.254", "cloud metadata"), ("169.254.1.1", "link-local"), ("100.64.0.1", "shared address space (CGNAT)"),
        ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"), ("::1", "loopback"), ("fe80::1", "link-local"),
        ("fc00::1", "private"), ("ff02::1", "multicast"), ("::ffff:127.0.0.1", "loopback (IPv4 inside IPv6)"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata (IPv4 inside IPv6)"), ("2002:a00:1::", "private (IPv4 inside IPv6)"),
        ("::127.0.0.1", "loopback (IPv4 inside IPv6)"), ("fd00:ec2::254", "cloud metadata"),
        ("8.8.8.8", None), ("2606:4700:4700::1111", None),
    ],
)
def test_address_classes(address: str, reason: str | None) -> None:
    assert address_refusal(ipaddress.ip_address(address)) == reason


def test_a_slow_name_lookup_is_bounded(connects: list[Any]) -> None:
    def slow(host: str, port: int) -> list[str]:
        time.sleep(3)
        return ["93.184.216.34"]

    started = time.monotonic()
    result = post("http://slow.example/x", b"{}", {}, REFUSING, LIMITS, resolver=slow)
    assert result.error is not None and "cannot resolve slow.example" in result.error
    assert time.monotonic() - started < LIMITS.connect_timeout + 0.5
    assert connects == []
