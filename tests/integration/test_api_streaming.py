"""How the server reads bodies: refusals before reading, cut-offs while reading, disconnects,
and memory that stays flat whatever the file size. Raw sockets where httpx would hide it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


from tests import rawhttp as raw
from tests.fixtures.app import Client, LiveServer
from tests.integration.contract import assert_error

MiB = 1024 * 1024
OVERSHOOT_BYTES = 576 * 1024



def request_head(client: Client, headers: dict[str, str]) -> bytes:
    return raw.head("POST", "/v1/uploads?filename=big.pdf", {"Authorization": f"Bearer {client.key}", **headers})


def test_content_length_over_the_cap_is_refused_before_any_body_byte(server: LiveServer, client: Client) -> None:
    with raw.connect(server.url) as sock:
        sock.sendall(request_head(client, {"Content-Type": "application/pdf", "Content-Length": "60000000"}))
        started = time.monotonic()
        response = raw.read_response(sock)
    assert response is not None
    assert_error(response, 413, "FILE_TOO_LARGE")
    assert time.monotonic() - started < 2
    assert server.spool_entries() == []


def test_chunked_body_is_cut_off_at_the_limit(server: LiveServer, client: Client) -> None:
    """A 60 MB chunked PDF: the server stops reading at most a chunk (plus its socket buffer)
    past the 50 MB limit. Counted from the server's own read syscalls (/proc/PID/io)."""
    limit = server.settings.limits.max_pdf_bytes
    chunk = b"%PDF-1.4\n" + b"\0" * (256 * 1024 - 9)
    total = 60 * 1000 * 1000
    before = server.bytes_read()

    def send() -> None:
        sent = 0
        try:
            sock.sendall(request_head(client, {"Content-Type": "application/pdf", "Transfer-Encoding": "chunked"}))
            while sent < total:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection after its 413

    with raw.connect(server.url) as sock:
        sender = threading.Thread(target=send)
        sender.start()
        response = raw.read_response(sock)
        with contextlib.suppress(OSError):  # the server may have closed it already
            sock.shutdown(socket.SHUT_RDWR)
        sender.join(timeout=30)
    consumed = server.bytes_read() - before
    assert response is not None
    assert_error(response, 413, "FILE_TOO_LARGE")
    # The last read (asyncio reads up to 256 KiB) and uvicorn's 64 KiB of buffered body may pass
    # the limit; nothing more: far less than the 10 MB the client still had to send.
    assert consumed <= limit + OVERSHOOT_BYTES, consumed
    assert consumed >= limit
    assert server.wait_for_empty_spool() == []
    assert client.upload_count() == 0


def test_client_gone_mid_body_leaves_nothing(server: LiveServer, client: Client) -> None:
    with raw.connect(server.url) as sock:
        sock.sendall(request_head(client, {"Content-Type": "application/pdf", "Content-Length": str(10 * MiB)}))
        sock.sendall(b"%PDF-1.4\n" + b"\0" * (3 * MiB))
        time.sleep(0.3)
        # The original streams to the object store (in memory up to one part): no spool file.
        # (Aborting a multipart upload under way: tests/integration/test_streamed_originals.py.)
        assert server.spool_entries() == []
    assert server.wait_for_empty_spool() == []
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
