"""A webhook receiver for tests: a real HTTP server on loopback (threads) that verifies every
request with the ``standardwebhooks`` package from PyPI — not the service's own signer — and
answers with a scripted status (or holds the request, or is down)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    webhook_id: str
    type: str | None
    payload: dict[str, Any] | None
    verified: bool
    answered: int
    headers: dict[str, str]
    payload_bytes: bytes = b""


@dataclass
class Receiver:
    host: str = "127.0.0.1"
    port: int = 0
    secret: str | None = None
    #: Statuses to answer, in order; 200 once used up.
    script: list[int] = field(default_factory=list)
    #: When set, each request waits for this before it is answered (``arrived`` is set first).
    hold: threading.Event | None = None
    arrived: threading.Event = field(default_factory=threading.Event)
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                payload, verified = None, False
                try:
                    payload = Webhook(receiver.secret or "").verify(body, headers)
                    verified = True
                except (WebhookVerificationError, ValueError) as exc:
                    self.log_message("verification failed: %s", exc)
                with receiver._lock:
                    status = receiver.script.pop(0) if receiver.script else 200
                if not verified:
                    status = 400
                receiver.arrived.set()
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                item = Received(
                    headers.get("webhook-id", ""), (payload or {}).get("type"), payload, verified, status, headers, body
                )
                with receiver._lock:
                    receiver.received.append(item)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(json.dumps({"ok": 200 <= status < 300}).encode())
                except OSError:
                    pass

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def delivered(self) -> list[Received]:
        """The requests answered 2xx, in arrival order."""
        with self._lock:
            return [r for r in self.received if 200 <= r.answered < 300]

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.delivered()) >= count:
                return self.delivered()
            time.sleep(0.05)
        raise AssertionError(f"{len(self.delivered())} deliveries, wanted {count}: {self.received}")
