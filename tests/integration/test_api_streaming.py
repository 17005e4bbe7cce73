"""How the server reads bodies: refusals before reading, cut-offs while reading, disconnects,
and memory that stays flat whatever the file size. Raw sockets where httpx would hide it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from urllib.parse import urlparse

import pytest

from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.integration.rawhttp import read_response

MiB = 1024 * 1024


@pytest.fixture
def client(server: LiveServer) -> Client:
    return server.client()


def connect(server: LiveServer) -> socket.socket:
    url = urlparse(server.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    return sock


def request_head(client: Client, headers: dict[str, str]) -> bytes:
    lines = ["POST /v1/uploads?filename=big.pdf HTTP/1.1", "Host: test", f"Authorization: Bearer {client.key}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_content_length_over_the_cap_is_refused_before_any_body_byte(server: LiveServer, client: Client) -> None:
    with connect(server) as sock:
        sock.sendall(request_head(client, {"Content-Type": "application/pdf", "Content-Length": "60000000"}))
        started = time.monotonic()
        status, raw = read_response(sock)
    assert status == 413
    assert time.monotonic() - started < 2
    assert b'"FILE_TOO_LARGE"' in raw
    assert server.spool_entries() == []


def test_chunked_body_is_cut_off_at_the_limit(server: LiveServer, client: Client) -> None:
    """A 60 MB chunked PDF: the server stops reading at most a chunk (plus its socket buffer)
    past the 50 MB limit. Counted from the server's own read syscalls (/proc/PID/io)."""
    limit = server.settings.limits.max_pdf_bytes
    chunk = b"%PDF-1.4\n" + b"\0" * (256 * 1024 - 9)
    total = 60 * 1000 * 1000
    before = server.bytes_read()
    result: dict[str, object] = {}

    def send() -> None:
        sent = 0
        try:
            sock.sendall(request_head(client, {"Content-Type": "application/pdf", "Transfer-Encoding": "chunked"}))
            while sent < total:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        result["sent"] = sent

    with connect(server) as sock:
        sender = threading.Thread(target=send)
        sender.start()
        status, raw = read_response(sock)
        with contextlib.suppress(OSError):  # the server may have closed it already
            sock.shutdown(socket.SHUT_RDWR)
        sender.join(timeout=30)
    consumed = server.bytes_read() - before
    assert status == 413, raw
    assert b'"FILE_TOO_LARGE"' in raw
    assert consumed <= limit + server.settings.limits.chunk_bytes + 512 * 1024, consumed
    assert consumed >= limit
    time.sleep(0.2)
    assert server.spool_entries() == []
    assert client.upload_count() == 0


def test_client_gone_mid_body_leaves_nothing(server: LiveServer, client: Client) -> None:
    with connect(server) as sock:
        sock.sendall(request_head(client, {"Content-Type": "application/pdf", "Content-Length": str(10 * MiB)}))
        sock.sendall(b"%PDF-1.4\n" + b"\0" * (3 * MiB))
        time.sleep(0.3)
        assert len(server.spool_entries()) == 1  # the partial file exists while the body streams
    deadline = time.monotonic() + 5
    while server.spool_entries() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.spool_entries() == []
    assert client.upload_count() == 0
    assert server.process.is_running()


def test_a_45_mb_upload_keeps_memory_flat(server: LiveServer, client: Client) -> None:
    size = 45 * MiB
    body = b"%PDF-1.4\n" + b"\0" * (size - 9)
    server.reset_peak_rss()
    before = server.proc_status("VmRSS")
    response = client.request(
        "POST", "/v1/uploads", params={"filename": "big.pdf"}, content=iter_chunks(body), headers={"Content-Type": "application/pdf"}
    )
    assert response.status_code == 202, response.text
    growth_kib = server.proc_status("VmHWM") - before
    assert growth_kib < 30 * 1024, f"peak RSS grew by {growth_kib} KiB"
    assert response.json()["size"] == size


def iter_chunks(data: bytes, size: int = 256 * 1024):  # type: ignore[no-untyped-def]
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])
