"""A body that trickles in — one byte well within nginx's ``client_body_timeout`` each time —
still ends at the app's total body deadline: the client gets ``408 REQUEST_TIMEOUT`` in the
error contract through nginx, and nothing is kept."""

from __future__ import annotations

import time
from pathlib import Path

from tests import rawhttp as raw
from tests import samples
from tests.fixtures.app import LiveServer
from tests.fixtures.nginx import start_front
from tests.integration.contract import assert_error, new_request_id


def test_a_trickling_body_through_nginx_gets_408_from_the_app(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = 2
    slow: LiveServer = server_factory(limits={"max_body_seconds": deadline})
    front = start_front(slow, tmp_path / "nginx", client_body_timeout_seconds=5)
    try:
        client = slow.client()
        request_id = new_request_id("e2e-trickle")
        png = samples.png_bytes()
        headers = {
            "Authorization": f"Bearer {client.key}",
            "Content-Type": "image/png",
            "Content-Length": str(len(png) + 100_000),
            "X-Request-ID": request_id,
        }
        started = time.monotonic()
        with raw.connect(front.url, timeout=15) as sock:
            sock.sendall(raw.head("POST", "/v1/uploads?filename=a.png", headers) + png[:16])
            response = raw.trickle_until_answer(sock, png, sent=16, seconds=15)  # never idle for client_body_timeout
        elapsed = time.monotonic() - started
        assert response is not None
        assert_error(response, 408, "REQUEST_TIMEOUT")
        assert response.headers["x-request-id"] == request_id
        assert deadline <= elapsed < deadline + 4, elapsed
        entry = front.access_entry(request_id)
        assert entry["status"] == 408 and entry["upstream_status"] == "408"  # the app's answer, relayed
        assert slow.wait_for_empty_spool() == []
        assert client.upload_count() == 0
    finally:
        front.process.stop()
