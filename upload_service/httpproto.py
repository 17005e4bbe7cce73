"""uvicorn's httptools protocol, handing each request body chunk to the app as httptools made it.

uvicorn (0.3x-0.5x) gathers the body bytes that arrive between two ``receive()`` calls in a
``bytearray`` (``cycle.body += chunk``) and hands the app ``bytes(cycle.body)``: every byte of
every upload copied twice on the event loop, on top of the socket read and httptools' own
slice. perf on a 45 MiB upload put those copies at ~12 % of the event loop's CPU. Here the
chunks are only listed until ``receive()`` takes them: one chunk (the usual case: the app waits
in ``receive()`` when it arrives) is handed on as it is, several are joined once. Flow control
is uvicorn's own (it pauses reading past its high-water mark, counted with ``len()``).

``upload-service serve`` runs uvicorn with this class as its ``http`` protocol
(``server.py``); the class is otherwise uvicorn's ``HttpToolsProtocol`` unchanged.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _BodyChunks:
    """Stands in for the cycle's ``bytearray``: ``+=`` lists a chunk, ``len()`` counts the
    bytes, ``bytes()`` gives them (the one chunk itself when there is only one)."""

    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def __iadd__(self, chunk: bytes) -> _BodyChunks:
        self._chunks.append(chunk)
        self._size += len(chunk)
        return self

    def __len__(self) -> int:
        return self._size

    def __bytes__(self) -> bytes:
        if len(self._chunks) == 1:
            return self._chunks[0]
        return b"".join(self._chunks)


class BodyChunksProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose request cycles collect body chunks without copying them."""

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle.body) is not _BodyChunks:  # a fresh cycle's, or what receive() left
            chunks = _BodyChunks()
            if cycle.body:  # (never non-empty here; kept, should uvicorn ever leave bytes)
                chunks += bytes(cycle.body)
            cycle.body = chunks
        super().on_body(body)
