"""The file's SHA-256 in the ingest loop, hashed beside the event loop once the file is large.

Hashing is about 0.9 ms of CPU per MiB here, as much as everything else the event loop does for
a large body (receive it, write it). Done inline, the two add up on one core; handed to a
helper thread (hashlib releases the GIL), they overlap on two: a 45 MiB body to the local store
went from 0.4–0.5x to 0.5–0.7x the speed of nginx writing it to disk (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor


class FileHash:
    """The file's SHA-256, fed chunk by chunk in order.

    Past its first ``INLINE_BYTES`` (so never for a small upload), chunks of at least
    ``OFFLOAD_BYTES`` are queued for a helper thread that hashes them in order while the event
    loop reads and writes the next ones (hashlib releases the GIL, so the two run on two cores).
    ``update`` never waits; the reader keeps the queue short (``behind()``, then ``wait()`` in a
    thread, as for a congested sink) and waits for the rest (``wait(0)``) before ``hexdigest``.
    Only immutable chunks (``bytes``, or a view of ``bytes``) are handed over as they are; a
    mutable one that must queue behind them is copied."""

    INLINE_BYTES = 1024 * 1024
    OFFLOAD_BYTES = 64 * 1024
    #: ``behind()`` past this many bytes queued.
    QUEUED_BYTES = 2 * 1024 * 1024
    _helpers = ThreadPoolExecutor(max_workers=16, thread_name_prefix="file-hash")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._fed = 0
        self._queue: deque[bytes | memoryview] = deque()
        self._queued = 0  # bytes fed and not hashed yet
        self._draining = False
        self._changed = threading.Condition()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._fed += len(data)
        offload = self._fed > self.INLINE_BYTES and len(data) >= self.OFFLOAD_BYTES and _immutable(data)
        if not offload and not self._queued:
            # Nothing queued: the helper is not hashing (it counts a chunk off only once hashed,
            # and only this caller queues), so no lock on the small upload's path.
            self._hash.update(data)
            return
        with self._changed:
            # Behind queued chunks, a small or mutable one waits its turn (copied if mutable).
            self._queue.append(data if _immutable(data) else bytes(data))
            self._queued += len(data)
            start, self._draining = not self._draining, True
        if start:
            self._helpers.submit(self._drain)

    def behind(self) -> bool:
        return self._queued > self.QUEUED_BYTES

    def pending(self) -> bool:
        return self._queued > 0

    def wait(self, queued: int = QUEUED_BYTES) -> None:
        """Block until at most ``queued`` bytes wait to be hashed."""
        with self._changed:
            while self._queued > queued:
                self._changed.wait()

    def hexdigest(self) -> str:
        self.wait(0)
        return self._hash.hexdigest()

    def _drain(self) -> None:
        while True:
            with self._changed:
                if not self._queue:
                    self._draining = False
                    return
                data = self._queue[0]
            self._hash.update(data)
            with self._changed:
                self._queue.popleft()
                self._queued -= len(data)
                self._changed.notify_all()


def _immutable(data: bytes | bytearray | memoryview) -> bool:
    return isinstance(data, bytes) or (isinstance(data, memoryview) and isinstance(data.obj, bytes))
