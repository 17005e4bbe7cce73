"""The front door: what the public listener refuses, the request id's way through every layer,
response headers, nginx's own protocol errors in the contract shape, and a missing upstream."""

from __future__ import annotations

import json
import re
import socket

import httpx
import pytest

from tests import samples
from tests import rawhttp as raw
from tests.fixtures.app import Client, LiveServer
from tests.fixtures.nginx import NginxFront
from tests.integration.contract import assert_error, new_request_id
from upload_service.devstack.process import free_port
from upload_service.nginxconf import CSP


@pytest.fixture
def client(server: LiveServer) -> Client:
    return server.client()


def app_log_entries(server: LiveServer, request_id: str) -> list[dict]:  # type: ignore[type-arg]
    entries = (json.loads(line) for line in server.log_text().splitlines() if line.startswith("{"))
    return [e for e in entries if e.get("request_id") == request_id]


@pytest.mark.parametrize(
    "path", ["/metrics", "/v1/audit", "/v1/audit/events", "/admin", "/admin/keys", "/%6detrics", "/health"]
)
def test_metrics_and_admin_routes_are_not_reachable_publicly(front: NginxFront, path: str) -> None:
    request_id = new_request_id("e2e")
    response = httpx.get(front.url + path, headers={"X-Request-ID": request_id}, timeout=10)
    assert_error(response, 404, "NOT_FOUND")
    assert front.access_entry(request_id)["upstream_addr"] == ""  # answered by nginx itself


def test_the_internal_listener_serves_metrics_and_nothing_public(front: NginxFront) -> None:
    internal_port = free_port()
    with front.variant(internal_listen=f"127.0.0.1:{internal_port}") as both:
        internal = f"http://127.0.0.1:{internal_port}"
        request_id = new_request_id("e2e")
        metrics = httpx.get(f"{internal}/metrics", headers={"X-Request-ID": request_id}, timeout=10)
        assert metrics.status_code == 200 and "# TYPE upload_" in metrics.text  # the app's Prometheus text
        assert both.access_entry(request_id)["upstream_addr"] != ""  # proxied to the API
        assert httpx.get(f"{internal}/livez", timeout=10).status_code == 200
        assert "checks" in httpx.get(f"{internal}/health", timeout=10).json()  # dependency details: internal only
        assert_error(httpx.get(f"{internal}/v1/uploads/x", timeout=10), 404, "NOT_FOUND")
        assert_error(httpx.get(f"{both.url}/metrics", timeout=10), 404, "NOT_FOUND")


def test_one_request_id_in_the_access_log_the_app_log_the_header_and_the_body(
    front: NginxFront, server: LiveServer, client: Client
) -> None:
    request_id = new_request_id("trace")
    response = httpx.post(
        f"{front.url}/v1/uploads",
        files={"file": ("page.html", samples.html_bytes(), "text/html")},
        headers={**client.headers, "X-Request-ID": request_id},
        timeout=30,
    )
    error = assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert error["request_id"] == response.headers["x-request-id"] == request_id
    assert front.access_entry(request_id)["upstream_status"] == "415"
    assert app_log_entries(server, request_id), "the app logged nothing with the request id"


def test_an_invalid_client_request_id_is_replaced_by_nginx_everywhere(
    front: NginxFront, server: LiveServer, client: Client
) -> None:
    sent = "not valid!"  # a space and '!' fail the app's rule
    response = httpx.get(f"{front.url}/v1/uploads/nope", headers={**client.headers, "X-Request-ID": sent}, timeout=10)
    error = assert_error(response, 404, "NOT_FOUND")
    generated = error["request_id"]
    assert generated != sent and re.fullmatch(r"[0-9a-f]{32}", generated)  # nginx's $request_id
    assert front.access_entry(generated)["upstream_status"] == "404"
    assert app_log_entries(server, generated)


def test_responses_carry_security_headers_once(front: NginxFront, client: Client) -> None:
    responses = [
        httpx.get(f"{front.url}/livez", timeout=10),  # the app's 200
        httpx.get(f"{front.url}/v1/uploads/nope", headers=client.headers, timeout=10),  # the app's error
        httpx.get(f"{front.url}/metrics", timeout=10),  # nginx's own error
    ]
    for response in responses:
        headers = response.headers
        assert headers.get_list("x-request-id") == [headers["x-request-id"]], headers
        assert headers.get_list("x-content-type-options") == ["nosniff"]
        assert headers.get_list("content-security-policy") == [CSP]
        assert headers["server"] == "nginx"  # server_tokens off: no version


def test_a_client_cannot_spoof_its_address_to_the_app(front: NginxFront, server: LiveServer) -> None:
    request_id = new_request_id("e2e")
    headers = {"X-Request-ID": request_id, "X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}
    assert httpx.get(f"{front.url}/livez", headers=headers, timeout=10).status_code == 200
    access = [e for e in app_log_entries(server, request_id) if e["logger"] == "uvicorn.access"]
    assert access and "203.0.113.9" not in access[0]["msg"], access
    assert access[0]["msg"].startswith("127.0.0.1:")  # the real peer, as nginx saw it


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GET /livez HTTP/1.1\r\nHost: e2e.test\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n", 431, "HEADERS_TOO_LARGE"),
        (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: e2e.test\r\n\r\n", 431, "HEADERS_TOO_LARGE"),
        (b"GARBAGE\r\n\r\n", 400, "BAD_REQUEST"),
        (b"GET /livez HTTP/1.1\r\n\r\n", 400, "BAD_REQUEST"),  # no Host
    ],
    ids=["header-too-large", "request-line-too-long", "garbage", "no-host"],
)
def test_nginx_protocol_errors_are_contract_json(front: NginxFront, request_bytes: bytes, status: int, code: str) -> None:
    with raw.connect(front.url) as sock:
        sock.sendall(request_bytes)
        response = raw.read_response(sock)
    assert response is not None
    assert_error(response, status, code)


def test_a_dead_upstream_is_502_json(front: NginxFront) -> None:
    with front.variant(upstreams=[f"127.0.0.1:{free_port()}"]) as dead:
        assert_error(httpx.get(f"{dead.url}/livez", timeout=10), 502, "UPSTREAM_UNAVAILABLE")


def test_a_stopped_api_is_502_json_and_recovers(front: NginxFront, server: LiveServer) -> None:
    server.process.stop()
    try:
        assert_error(httpx.get(f"{front.url}/livez", timeout=10), 502, "UPSTREAM_UNAVAILABLE")
    finally:
        server.process.start(timeout=30)
    assert httpx.get(f"{front.url}/livez", timeout=10).status_code == 200


def test_an_upstream_that_never_answers_is_504_json(front: NginxFront) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections (kernel backlog), never answers
        port = silent.getsockname()[1]
        with front.variant(upstreams=[f"127.0.0.1:{port}"], proxy_read_timeout_seconds=1) as stuck:
            assert_error(httpx.get(f"{stuck.url}/livez", timeout=10), 504, "UPSTREAM_UNAVAILABLE")
