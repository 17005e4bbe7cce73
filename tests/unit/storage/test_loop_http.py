"""The event loop's HTTP/1.1 connections (``storage/loop_http.py``) against small servers on
real sockets that answer as S3 servers do and as broken ones do: answers kept-alive on one
connection, a closing or vanished connection never reused, chunked error bodies read whole,
silence and garbage named, on asyncio's loop and on uvloop's (the API's); TLS verified against the trusted authorities."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from upload_service.storage import loop_http

T = TypeVar("T")

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: \"e\"\r\n\r\n"
#: Each request: its head and body read, then how the server answers (bytes, or None: silence).
Answer = Callable[[bytes], Awaitable[bytes | None]]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, T]], T]:
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coroutine)

    return run


class Server:
    """Reads each request (head and ``Content-Length`` body) and writes what ``answer`` says;
    counts connections and keeps the requests it read."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> loop_http.Endpoint:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return loop_http.Endpoint(
            "127.0.0.1", port, tls=None, host_header=f"127.0.0.1:{port}", connect_timeout=2.0, read_timeout=0.5
        )

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
                    0,
                )
                self.requests.append(head + await reader.readexactly(length))
                reply = await self.answer(head)
                if reply is None:
                    await asyncio.sleep(5)
                    return
                writer.write(reply)
                await writer.drain()
                if b"Connection: close" in reply:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


async def put(endpoint: loop_http.Endpoint, body: bytes = b"x" * 1000) -> loop_http.Response:
    return await endpoint.request("PUT", "/bucket/key", {"Content-Length": str(len(body)), "X-Amz-Date": "d"}, body)


def test_answers_come_on_one_kept_alive_connection(run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
    async def answer(head: bytes) -> bytes:
        return OK

    server = Server(answer)

    async def scenario() -> list[loop_http.Response]:
        async with server as endpoint:
            answers = [await put(endpoint) for _ in range(3)]
            endpoint.close()
            return answers

    answers = run(scenario())
    assert [(a.status, a.headers["etag"]) for a in answers] == [(200, '"e"')] * 3
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"PUT /bucket/key HTTP/1.1\r\nHost: 127.0.0.1:")
    assert first.endswith(b"\r\n\r\n" + b"x" * 1000)


def test_a_connection_the_server_closes_is_not_used_again(run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
    """Once with ``Connection: close`` in the answer, once closed by the server while idle."""
    async def answer(head: bytes) -> bytes:
        return OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")

    server = Server(answer)

    async def scenario() -> list[int]:
        async with server as endpoint:
            statuses = [(await put(endpoint)).status for _ in range(2)]
            await asyncio.sleep(0.1)  # the server's close of the second one arrives while it is idle
            statuses.append((await put(endpoint)).status)
            return statuses

    assert run(scenario()) == [200, 200, 200]
    assert server.connections == 3


def test_a_chunked_error_answer_is_read_whole(run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
    xml = b"<Error><Code>BadDigest</Code><Message>The sha256 you specified did not match</Message></Error>"
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in (xml[:30], xml[30:])) + b"0\r\n\r\n"

    async def answer(head: bytes) -> bytes:
        return b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked

    async def scenario() -> tuple[loop_http.Response, loop_http.Response]:
        async with Server(answer) as endpoint:
            return await put(endpoint), await put(endpoint)

    first, second = run(scenario())
    assert (first.status, first.body) == (400, xml)
    assert (second.status, second.body) == (400, xml)  # the connection stayed in step


def test_silence_and_garbage_are_named_and_the_connection_dropped(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    replies: list[bytes | None] = [None, b"SSH-2.0-OpenSSH_9.2\r\n", OK]

    async def answer(head: bytes) -> bytes | None:
        return replies.pop(0)

    server = Server(answer)

    async def scenario() -> list[str]:
        outcomes = []
        async with server as endpoint:
            for _ in range(3):
                try:
                    outcomes.append(str((await put(endpoint)).status))
                except loop_http.LoopHttpError as exc:
                    outcomes.append(type(exc).__name__)
        return outcomes

    assert run(scenario()) == ["ReadTimeout", "Broken", "200"]
    assert server.connections == 3  # neither failed connection was used again


def test_nobody_listening_is_unreachable(run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
    endpoint = loop_http.Endpoint(
        "127.0.0.1", 9, tls=None, host_header="127.0.0.1:9", connect_timeout=1.0, read_timeout=1.0
    )
    with pytest.raises(loop_http.Unreachable):
        run(put(endpoint))


def test_a_header_with_a_line_break_is_never_sent(run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
    async def answer(head: bytes) -> bytes:
        return OK

    server = Server(answer)

    async def scenario() -> None:
        async with server as endpoint:
            for smuggled in ({"Content-Type": "image/png\r\nX-Evil: 1"}, {"X-A\nB": "1"}, {"X": "a\rb"}):
                with pytest.raises(ValueError, match="line break"):
                    await endpoint.request("PUT", "/bucket/key", {"Content-Length": "0", **smuggled}, b"")

    run(scenario())
    assert server.requests == []


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A CA of its own and a server certificate it signed for 127.0.0.1 (the ``openssl`` CLI)."""
    where = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    openssl("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test CA")
    openssl("req", *curve, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=s3")
    (where / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "node.crt", "-days", "2", "-extfile", "ext.cnf")
    return where / "ca.crt", where / "node.crt", where / "node.key"


def test_tls_is_verified_against_the_trusted_authorities(
    run: Callable[[Coroutine[Any, Any, Any]], Any], certificate: tuple[Path, Path, Path]
) -> None:
    """An endpoint whose certificate chains to a trusted CA answers over TLS; one the client's
    authorities do not vouch for is a ``TlsError`` before any byte of the request is sent."""
    ca, cert, key = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            await reader.readexactly(3)
            writer.write(OK)
            await writer.drain()
        writer.close()

    async def scenario() -> tuple[int, str]:
        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=served)
        port = server.sockets[0].getsockname()[1]

        def endpoint(trusted: ssl.SSLContext) -> loop_http.Endpoint:
            return loop_http.Endpoint("127.0.0.1", port, tls=trusted, host_header=f"127.0.0.1:{port}",
                                      connect_timeout=2.0, read_timeout=2.0)

        ours = endpoint(ssl.create_default_context(cafile=str(ca)))
        status = (await put(ours, b"abc")).status
        ours.close()
        try:
            await put(endpoint(ssl.create_default_context()), b"abc")  # the system's authorities only
            refused = "sent"
        except loop_http.TlsError as exc:
            refused = str(exc)
        server.close()
        return status, refused

    status, refused = run(scenario())
    assert status == 200 and len(seen) == 1
    assert "CERTIFICATE_VERIFY_FAILED" in refused
