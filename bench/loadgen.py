"""A minimal HTTP/1.1 load generator for many small uploads: N keep-alive connections, each
sending one pre-built request after the other.

Why not ``httpx.AsyncClient``: on this 2-core machine it spent about 5 ms of CPU per request,
so the client, sharing the cores with the server, capped the naive app at ~150 requests/s and
the comparison measured httpx. Here the request bytes are built once and a response is parsed
only as far as ``Content-Length`` (both servers send it), so the client costs a few tens of
microseconds a request. Runs on uvloop when it is installed (it comes with ``uvicorn[standard]``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    wall: float = 0.0

    def failures(self, ok: tuple[int, ...]) -> int:
        return sum(count for status, count in self.statuses.items() if status not in ok)


def build_request(url: str, headers: dict[str, str], body: bytes) -> bytes:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Status and whether the server will close the connection; the body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, close = None, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    if length is None:
        raise RuntimeError(f"response without Content-Length (status {status})")
    await reader.readexactly(length)
    return status, close


async def hammer(url: str, request: bytes, total: int, concurrency: int) -> Results:
    """Send ``request`` ``total`` times over ``concurrency`` connections; time each one."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    results = Results()
    left = total

    async def connection() -> None:
        nonlocal left
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while left > 0:
                left -= 1
                started = time.perf_counter()
                writer.write(request)
                status, close = await _read_response(reader)
                results.latencies.append(time.perf_counter() - started)
                results.statuses[status] = results.statuses.get(status, 0) + 1
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    results.wall = time.perf_counter() - started
    return results


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when available."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
