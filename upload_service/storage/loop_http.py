"""HTTP/1.1 requests from the running event loop: kept-alive connections on asyncio's transports,
responses parsed by httptools (the C parser uvicorn serves with).

It carries one kind of request, the accept path's ``PUT`` of a whole original
(``storage/s3_loop.py``): the request fully built by the caller (headers, ``Content-Length``,
signature), a body already in memory, a short response. Nothing else a general client does is
needed there — no redirects, cookies, decompression, proxies or streaming — and each of those
costs CPU on every request (docs/architecture.md, "A whole original is PUT from the event
loop": over aiohttp a `PUT` cost 0.29–0.46 ms of client CPU, over this module 0.17–0.27).

Errors are asyncio's and the OS's, named by the one exception type per cause below so that the
caller can map them: ``ConnectTimeout`` (no connection within ``connect_timeout``), ``TlsError``,
``Unreachable`` (refused, no route), ``ReadTimeout`` (``read_timeout`` without a byte of the
answer) and ``Broken`` (closed, reset, or an answer that is not HTTP). A connection that failed
is closed, never reused.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import httptools

#: Idle connections kept per endpoint (more in flight are closed when their answer is in).
MAX_IDLE = 64


class LoopHttpError(Exception):
    """A request that got no HTTP answer."""


class ConnectTimeout(LoopHttpError):
    pass


class TlsError(LoopHttpError):
    pass


class Unreachable(LoopHttpError):
    pass


class ReadTimeout(LoopHttpError):
    pass


class Broken(LoopHttpError):
    pass


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names lowercased; a repeated header keeps its last value
    body: bytes


class _Connection(asyncio.Protocol):
    """One kept-alive connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[Response] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.usable = True

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # (uvloop's are not subclasses)

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        if self._answer is None or self._answer.done():
            self._fail(Broken("bytes from the server while no request was waiting"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Broken(f"not an HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        if self._answer is not None and not self._answer.done():
            if isinstance(exc, ssl.SSLError):
                self._answer.set_exception(TlsError(str(exc)))
            else:
                self._answer.set_exception(Broken(f"connection closed before the answer ({exc or 'by the server'})"))

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._parser.should_keep_alive():
            self.usable = False
        answer = Response(self._parser.get_status_code(), self._headers, b"".join(self._body))
        self._headers, self._body = {}, []
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(answer)

    # -- requests

    async def exchange(self, head: bytes, body: bytes | bytearray | memoryview, read_timeout: float) -> Response:
        assert self._transport is not None
        self._answer = answer = self._loop.create_future()
        self._last_read = self._loop.time()
        self._transport.writelines((head, body))
        self._timer = self._loop.call_later(read_timeout, self._check_silence, read_timeout)
        try:
            response = await answer
        except BaseException:
            self.close()  # cancelled, timed out or broken: half a request may be on the wire
            raise
        finally:
            self._answer = None
            self._timer.cancel()
        if self._transport.get_write_buffer_size():
            self.usable = False  # answered before the whole body was sent: the stream is out of step
        return response

    def _check_silence(self, read_timeout: float) -> None:
        """Runs at most ``read_timeout`` after the last byte read: fails the request if nothing
        came since, else looks again when that much time will have passed."""
        if self._answer is None or self._answer.done():
            return
        silent_for = self._loop.time() - self._last_read
        if silent_for >= read_timeout:
            self._fail(ReadTimeout(f"no answer for {read_timeout:g} s"))
        else:
            self._timer = self._loop.call_later(read_timeout - silent_for, self._check_silence, read_timeout)

    def _fail(self, error: LoopHttpError) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        self.close()

    def close(self) -> None:
        self.usable = False
        if self._transport is not None:
            self._transport.abort()


class Endpoint:
    """Kept-alive connections to one ``scheme://host:port``, for the event loop it is used on."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        host_header: str,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self._host, self._port, self._tls = host, port, tls
        self._host_line = f"Host: {host_header}\r\n"
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._idle: list[_Connection] = []

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | bytearray | memoryview
    ) -> Response:
        """One request on a kept-alive connection (or a new one); ``headers`` must carry the
        body's ``Content-Length``. Raises a ``LoopHttpError`` when no answer comes."""
        head = _head(method, target, self._host_line, headers)
        connection = self._idle_connection() or await self._connect()
        answer = await connection.exchange(head, body, self._read_timeout)
        if connection.usable and len(self._idle) < MAX_IDLE:
            self._idle.append(connection)
        else:
            connection.close()
        return answer

    def close(self) -> None:
        """Close the idle connections (those in flight close when their answer is in)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _idle_connection(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable:
                return connection
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop), self._host, self._port,
                    ssl=self._tls, server_hostname=self._host if self._tls is not None else None,
                )
        except TimeoutError as exc:
            raise ConnectTimeout(f"no connection to {self._host}:{self._port} in {self._connect_timeout:g} s") from exc
        except ssl.SSLError as exc:  # (a certificate that is not trusted, too)
            raise TlsError(str(exc)) from exc
        except OSError as exc:
            raise Unreachable(f"{self._host}:{self._port}: {exc.strerror or exc}") from exc
        return connection


def _head(method: str, target: str, host_line: str, headers: Mapping[str, str]) -> bytes:
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    # Each header adds one CR and one LF: any more would be a header smuggled into the request.
    if lines.count("\n") != len(headers) or lines.count("\r") != len(headers):
        raise ValueError("a header name or value holds a line break")
    return f"{method} {target} HTTP/1.1\r\n{host_line}{lines}\r\n".encode("latin-1")
