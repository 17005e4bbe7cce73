"""The API's HTTP protocol (``httpproto.BodyChunksProtocol``, uvicorn's httptools protocol that
hands body chunks on without copying them) under a real uvicorn and real sockets: a body comes
through byte for byte whether the app waits for each chunk or falls behind and takes several at
once, reading pauses while the app is behind (uvicorn's flow control), and ``serve`` runs it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.importer import import_from_string

from upload_service import server
from upload_service.httpproto import BodyChunksProtocol
from upload_service.metrics import MULTIPROCESS_ENV
from upload_service.settings import Settings


class BodyApp:
    """Reads the request body (sleeping ``lag`` seconds before each ``receive`` if told) and
    answers its SHA-256, size and how many messages it came in."""

    def __init__(self) -> None:
        self.lag = 0.0
        self.types: set[type] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        digest, size, messages = hashlib.sha256(), 0, 0
        while True:
            if self.lag:
                await asyncio.sleep(self.lag)
            message = await receive()
            body = message.get("body", b"")
            self.types.add(type(body))
            digest.update(body)
            size += len(body)
            messages += 1
            if not message.get("more_body"):
                break
        answer = f"{digest.hexdigest()} {size} {messages}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(answer))]})
        await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[int, BodyApp]]:
    app = BodyApp()
    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=BodyChunksProtocol, log_level="warning", lifespan="off")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = instance.servers[0].sockets[0].getsockname()[1]
    yield port, app
    instance.should_exit = True
    thread.join(timeout=10)


def post(port: int, body: bytes, pieces: list[int], pause: float = 0.0) -> tuple[str, int, int]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
        sent = 0
        for size in pieces:
            connection.sendall(body[sent : sent + size])
            sent += size
            if pause:
                time.sleep(pause)
        connection.sendall(body[sent:])
        answer = b""
        while not answer.endswith(b"\r\n\r\n") and b"\r\n\r\n" not in answer:
            answer += connection.recv(65536)
        head, _, rest = answer.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(rest) < length:
            rest += connection.recv(65536)
    digest, size, messages = rest.decode().split()
    return digest, int(size), int(messages)


def test_a_body_comes_through_byte_for_byte_however_it_arrives(served: tuple[int, BodyApp]) -> None:
    port, app = served
    body = os.urandom(8 * 1024 * 1024 + 17)
    rng = random.Random(7)
    pieces = [rng.choice((1, 3, 1000, 65_536, 300_000)) for _ in range(60)]
    app.lag = 0.0  # the app waits in receive(): each chunk is handed on as it came
    assert post(port, body, pieces, pause=0.001)[:2] == (hashlib.sha256(body).hexdigest(), len(body))
    app.lag = 0.05  # the app falls behind: chunks gather between two receive() calls
    digest, size, messages = post(port, body, pieces)
    assert (digest, size) == (hashlib.sha256(body).hexdigest(), len(body))
    assert messages < 60  # several chunks were handed on as one message
    assert app.types == {bytes}


def test_reading_pauses_while_the_app_is_behind(served: tuple[int, BodyApp]) -> None:
    """uvicorn's flow control still works: with the app reading one message per 0.2 s, the
    server does not read a 64 MiB body ahead into memory; the client's send blocks."""
    port, app = served
    app.lag = 0.2
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        connection.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (64 * 1024 * 1024))
        connection.setblocking(False)
        sent, chunk, started = 0, b"\0" * 65536, time.monotonic()
        while time.monotonic() - started < 1.0:
            try:
                sent += connection.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
    app.lag = 0.0
    assert sent < 16 * 1024 * 1024  # a few socket buffers and uvicorn's high-water mark, not the body


def test_serve_runs_the_api_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.update(options))
    monkeypatch.delenv(MULTIPROCESS_ENV, raising=False)  # (serve clears it for one process)
    server.serve(Settings(), host="127.0.0.1", port=1, uds=None, workers=1)
    assert import_from_string(ran["http"]) is BodyChunksProtocol
