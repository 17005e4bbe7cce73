"""Raw HTTP/1.1 over a socket, for what httpx would hide: slow and stalled clients, bodies cut
off mid-stream, responses that arrive before the request is sent in full, closed connections.

Responses come back as ``httpx.Response`` so the contract assertions apply unchanged.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlparse

import httpx


def connect(url: str, timeout: float = 30.0) -> socket.socket:
    parsed = urlparse(url)
    assert parsed.hostname is not None and parsed.port is not None
    return socket.create_connection((parsed.hostname, parsed.port), timeout=timeout)


def head(method: str, target: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: e2e.test", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> httpx.Response | None:
    """One response (head + Content-Length body), or None if the server closed without one."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    if b"\r\n\r\n" not in data:
        assert data == b"", f"a partial response: {data[:200]!r}"
        return None
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
    try:
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except ConnectionResetError:
        pass
    return httpx.Response(int(status_line.split(" ", 2)[1]), headers=headers, content=body[:length])


def closed_without_response(sock: socket.socket) -> bool:
    """True when the server closes (FIN or RST) having sent nothing."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def trickle_until_answer(
    sock: socket.socket, body: bytes, *, sent: int, seconds: float, trickle: bool = True, pause: float = 0.3
) -> httpx.Response | None:
    """Wait up to ``seconds`` for the answer to a request whose body is still owed; each
    ``pause`` without one, send the next byte of ``body`` after its first ``sent`` (then NULs),
    so the connection is never idle for long — or send nothing with ``trickle=False`` (a stall)."""
    started = time.monotonic()
    sock.settimeout(pause)
    while time.monotonic() - started < seconds:
        try:
            return read_response(sock)
        except TimeoutError:
            if trickle:
                sock.sendall(body[sent:sent + 1] or b"\0")
                sent += 1
    return None
