"""Slow clients and floods against separate nginx instances with tiny timeouts and rates.

What nginx 1.22 really does, asserted as such: a client that stalls in its headers or its body
is disconnected without any response (nginx logs 408 but never sends it); rate and connection
limits answer 429 in the contract shape.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests import samples
from tests import rawhttp as raw
from tests.fixtures.app import Client, LiveServer
from tests.fixtures.nginx import NginxFront
from tests.integration.contract import assert_error

MiB = 1024 * 1024


@pytest.fixture
def client(server: LiveServer) -> Client:
    return server.client()


def test_a_client_stalling_in_its_headers_is_disconnected(front: NginxFront) -> None:
    with front.variant(client_header_timeout_seconds=1) as slow, raw.connect(slow.url) as sock:
        sock.sendall(b"POST /v1/uploads HTTP/1.1\r\nHost: e2e.test\r\n")  # ...and never the rest
        started = time.monotonic()
        assert raw.closed_without_response(sock)
        waited = time.monotonic() - started
    assert 0.8 <= waited < 5, waited


def test_a_client_stalling_in_its_body_is_disconnected_and_the_app_keeps_nothing(
    front: NginxFront, server: LiveServer, client: Client
) -> None:
    request_id = f"e2e-slow-{uuid.uuid4().hex}"
    headers = {
        "Authorization": f"Bearer {client.key}",
        "Content-Type": "application/pdf",
        "Content-Length": str(MiB),
        "X-Request-ID": request_id,
    }
    with front.variant(client_body_timeout_seconds=1) as slow:
        with raw.connect(slow.url) as sock:
            sock.sendall(raw.head("POST", "/v1/uploads?filename=slow.pdf", headers) + b"%PDF-1.4\n" + b"\0" * 65536)
            started = time.monotonic()
            assert raw.closed_without_response(sock)
            waited = time.monotonic() - started
        entry = slow.access_entry(request_id)
    assert 0.8 <= waited < 5, waited
    assert entry["status"] == 408  # logged as a timeout; the client got a closed connection
    assert server.wait_for_empty_spool() == []  # the app saw the body stop and removed its part file
    assert client.upload_count() == 0


def test_a_burst_over_limit_req_gets_429_json(front: NginxFront, server: LiveServer, client: Client) -> None:
    with front.variant(api_rate="1r/m", api_burst=0, upload_rate="1r/m", upload_burst=0) as limited:
        statuses = []
        for _ in range(4):
            response = httpx.get(f"{limited.url}/livez", timeout=10)
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert_error(response, 429, "RATE_LIMITED")
        assert statuses == [200, 429, 429, 429]

        uploads = [
            httpx.post(
                f"{limited.url}/v1/uploads",
                files={"file": ("a.png", samples.png_bytes(), "image/png")},
                headers={**client.headers, "X-Request-ID": f"e2e-burst-{i}-{uuid.uuid4().hex[:8]}"},
                timeout=30,
            )
            for i in range(3)
        ]
    assert uploads[0].status_code == 202, uploads[0].text
    for response in uploads[1:]:
        error = assert_error(response, 429, "RATE_LIMITED")
        assert error["request_id"] not in server.log_text()  # refused before the app
    assert client.upload_count() == 1


def test_connections_over_limit_conn_get_429_json(front: NginxFront, server: LiveServer, client: Client) -> None:
    headers = {"Authorization": f"Bearer {client.key}", "Content-Type": "application/pdf", "Content-Length": str(MiB)}
    with front.variant(conn_per_client=1) as limited:
        with raw.connect(limited.url) as holder:
            # One upload in progress holds this client's only connection slot.
            holder.sendall(raw.head("POST", "/v1/uploads?filename=held.pdf", headers) + b"%PDF-1.4\n")
            time.sleep(0.3)
            response = httpx.get(f"{limited.url}/livez", timeout=10)
            assert_error(response, 429, "RATE_LIMITED")
        assert httpx.get(f"{limited.url}/livez", timeout=10).status_code == 200  # slot freed
    assert server.wait_for_empty_spool() == []
