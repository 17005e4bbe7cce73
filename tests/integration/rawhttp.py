"""A raw-socket HTTP/1.1 reader, for tests where a client library would hide what the server
does with the connection (answers before the body, cut-offs, closes)."""

from __future__ import annotations

import socket


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and the whole response (head and a Content-Length body) as raw bytes."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    if not data:
        return 0, data
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ", 2)[1]), head + b"\r\n\r\n" + body
