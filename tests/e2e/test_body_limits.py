"""Body limits through the real nginx: the cap nginx renders from the app's settings, the body
streaming straight through to the app, and the app's own (per-type) refusals passing through
unchanged."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests import samples
from tests import rawhttp as raw
from tests.fixtures.app import Client, LiveServer
from tests.fixtures.nginx import NginxFront
from tests.integration.contract import assert_error, new_request_id

MiB = 1024 * 1024


@pytest.fixture
def client(server: LiveServer) -> Client:
    return server.client()


def pdf_head(client: Client, request_id: str, extra: dict[str, str]) -> bytes:
    headers = {"Authorization": f"Bearer {client.key}", "Content-Type": "application/pdf", "X-Request-ID": request_id}
    return raw.head("POST", "/v1/uploads?filename=big.pdf", {**headers, **extra})


def test_a_49_mb_pdf_streams_through_to_the_app(front: NginxFront, server: LiveServer, client: Client) -> None:
    body = b"%PDF-1.4\n" + b"\0" * (49 * MiB - 9)
    request_id = new_request_id("e2e")
    response = httpx.post(
        f"{front.url}/v1/uploads",
        params={"filename": "big.pdf"},
        content=body,
        headers={**client.headers, "Content-Type": "application/pdf", "X-Request-ID": request_id},
        timeout=120,
    )
    assert response.status_code == 202, response.text
    assert response.json()["size"] == len(body)
    assert response.headers["x-request-id"] == request_id
    entry = front.access_entry(request_id)
    assert (entry["status"], entry["upstream_status"]) == (202, "202")
    assert client.upload_count() == 1


def test_51_mb_with_content_length_is_refused_by_nginx_before_the_app(
    front: NginxFront, server: LiveServer, client: Client
) -> None:
    request_id = new_request_id("e2e")
    with raw.connect(front.url) as sock:
        # Only the head: the refusal comes before a single body byte is sent.
        sock.sendall(pdf_head(client, request_id, {"Content-Length": str(51 * MiB)}))
        response = raw.read_response(sock)
    assert response is not None
    error = assert_error(response, 413, "FILE_TOO_LARGE")
    assert error["request_id"] == request_id
    assert error["details"] == {"limit_bytes": server.settings.limits.max_body_bytes}
    entry = front.access_entry(request_id)
    assert (entry["status"], entry["upstream_addr"]) == (413, ""), entry  # never proxied
    assert request_id not in server.log_text()  # the app has no line at all for it
    assert client.upload_count() == 0


def test_51_mb_chunked_is_cut_off_and_the_app_keeps_nothing(front: NginxFront, server: LiveServer, client: Client) -> None:
    """No length up front: nginx streams the body to the app until it passes the cap, then
    answers 413 and drops the upstream connection; the app deletes its partial spool file."""
    request_id = new_request_id("e2e")
    chunk = b"%PDF-1.4\n" + b"\0" * (256 * 1024 - 9)
    total = 51 * MiB

    def send(sock: object) -> None:
        sent = 0
        try:
            while sent < total:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")  # type: ignore[attr-defined]
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")  # type: ignore[attr-defined]
        except OSError:
            pass  # nginx closed the connection after its 413

    with raw.connect(front.url) as sock:
        sock.sendall(pdf_head(client, request_id, {"Transfer-Encoding": "chunked"}))
        sender = threading.Thread(target=send, args=(sock,))
        sender.start()
        response = raw.read_response(sock)
        sender.join(timeout=30)
    assert response is not None
    assert_error(response, 413, "FILE_TOO_LARGE")
    assert server.wait_for_empty_spool() == []
    assert client.upload_count() == 0
    # The body did stream to the app, which cleaned up (its log line may trail the cleanup).
    deadline = time.monotonic() + 10
    while request_id not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert request_id in server.log_text()


def test_the_apps_own_per_type_413_passes_through_unchanged(front: NginxFront, server: LiveServer, client: Client) -> None:
    """A raw PNG over the image limit but under nginx's cap: the app refuses it from its
    Content-Length, and nginx relays the app's JSON as is (no interception)."""
    limit = server.settings.limits.max_image_bytes
    assert limit < server.settings.limits.max_body_bytes
    request_id = new_request_id("e2e")
    headers = {"Authorization": f"Bearer {client.key}", "Content-Type": "image/png", "X-Request-ID": request_id}
    with raw.connect(front.url) as sock:
        sock.sendall(raw.head("POST", "/v1/uploads?filename=big.png", {**headers, "Content-Length": str(limit + 1)}))
        response = raw.read_response(sock)
    assert response is not None
    error = assert_error(response, 413, "FILE_TOO_LARGE")
    assert error["message"] == f"the upload exceeds the limit of {limit} bytes"  # the app's words
    assert error["details"] == {"limit_bytes": limit}
    assert front.access_entry(request_id)["upstream_status"] == "413"
    assert server.wait_for_empty_spool() == []


def test_app_errors_are_identical_through_nginx_and_direct(front: NginxFront, server: LiveServer, client: Client) -> None:
    bodies = []
    for base in (server.url, front.url):
        request_id = new_request_id("e2e")
        response = httpx.post(
            f"{base}/v1/uploads",
            files={"file": ("page.html", samples.html_bytes(), "text/html")},
            headers={**client.headers, "X-Request-ID": request_id},
            timeout=30,
        )
        error = assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
        assert error.pop("request_id") == request_id
        bodies.append(error)
    assert bodies[0] == bodies[1]
