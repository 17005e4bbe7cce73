"""The parts of an original streamed to S3 after its first: how large each is and whether it
streams (``PartPlan``), and the part itself, filled by the reader while a thread sends it
(``Part``). ``s3_writer.py`` drives them."""

from __future__ import annotations

import contextlib
import mmap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from upload_service.storage.s3_direct import CHUNK_BYTES, PartChecksum, TruncatedBody

#: S3's smallest part (all but the last part of an upload).
MIN_PART_BYTES = 5 * 1024 * 1024
#: With a size hint the planned parts end this far before it: what follows (a form's closing
#: boundary and later fields, or the file's last bytes) is sent as a small last part.
HINT_SLACK = 256 * 1024
#: A part whose writer got no byte, commit or abort for this long gives up.
STALL_SECONDS = 300.0


def part_buffer(size: int) -> mmap.mmap:
    """Memory for one part: a private anonymous mapping, not a bytearray, so what the pool does not
    keep (``BufferPool``) goes back to the OS when it is unmapped (malloc would keep a freed 8 MiB
    block in its heap and let the process grow). Private, not ``mmap``'s default shared mapping (which lives in shmem and
    faults page by page), and with transparent huge pages asked for where the kernel offers them:
    filling a fresh part costs ~0.1 ms/MiB instead of ~0.9 (docs/benchmarks.md)."""
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        buffer.madvise(mmap.MADV_HUGEPAGE)
    return buffer


#: Idle part buffers a process keeps for its next parts (~8-10 MiB of memory each).
KEEP_IDLE_BUFFERS = 3
_HUGE_PAGE = 2 * 1024 * 1024


class BufferPool:
    """Part buffers kept for the next parts, of any upload of the process. A fresh buffer's
    first touch has the kernel zero every page of it: 17 % of the API's CPU on 45 MiB uploads
    to S3 (docs/architecture.md, "The original streams to the store while the body arrives").
    At most ``keep`` idle buffers are kept; more are unmapped. A buffer is whole huge pages
    (2 MiB), so parts of nearby sizes share them; a part uses its first ``size`` bytes and only
    ever sends what it was filled with."""

    def __init__(self, keep: int = KEEP_IDLE_BUFFERS) -> None:
        self._keep = keep
        self._idle: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> mmap.mmap:
        """The smallest idle buffer of at least ``size`` bytes, or a fresh one."""
        with self._lock:
            fitting = [buffer for buffer in self._idle if len(buffer) >= size]
            if fitting:
                buffer = min(fitting, key=len)
                self._idle.remove(buffer)
                return buffer
        return part_buffer(-(-size // _HUGE_PAGE) * _HUGE_PAGE)

    def give(self, buffer: mmap.mmap) -> None:
        """A buffer no part uses any more (its sender and its reader are done with it)."""
        with self._lock:
            if len(self._idle) < self._keep:
                self._idle.append(buffer)
                return
        with contextlib.suppress(BufferError):  # (a view still held: unmapped when it goes)
            buffer.close()

    @property
    def idle(self) -> int:
        with self._lock:
            return len(self._idle)


#: The process's part buffers.
PART_BUFFERS = BufferPool()


@dataclass(frozen=True)
class PartPlan:
    """Where the parts of one upload end, and which of them stream: ``part_bytes`` (the
    setting), ``size_hint`` (the body's size or an upper bound, if known)."""

    part_bytes: int
    size_hint: int | None

    def size_at(self, start: int) -> int:
        """The declared size of the part that starts at byte ``start``.

        Without ``size_hint``: S3's smallest part, 5 MiB (or ``part_bytes`` if smaller): the part
        the body ends in is sent again with its real size at ``commit``, and the smallest part
        bounds what goes out twice (2.5 MiB on average instead of 4 at 8 MiB parts). With it
        (the body's size, or an upper bound: a multipart form's request length), the parts are
        cut so that the body's end falls on a part
        boundary: the last planned part ends ``HINT_SLACK`` before the bound, and what comes
        after it (the form's closing boundary, its later fields, or up to ``HINT_SLACK`` bytes
        of the file) is a small last part. Every part but the last stays >= 5 MiB.
        """
        left = None if self.size_hint is None else self.size_hint - start - HINT_SLACK
        if left is None or left + HINT_SLACK <= 0:
            # No hint, or the body went past it: parts as small as S3 allows.
            return min(self.part_bytes, MIN_PART_BYTES)
        if left >= self.part_bytes + MIN_PART_BYTES:
            return self.part_bytes
        if left > self.part_bytes:
            # Two parts left: keep the next one >= 5 MiB (or take all, up to 2 x 5 MiB).
            return left - MIN_PART_BYTES if left >= 2 * MIN_PART_BYTES else left
        if left >= MIN_PART_BYTES:
            return left
        # Less than 5 MiB left: a part that may not be the last would be too small, so this one
        # runs to the bound (if the body ends before it, it is sent again, as without a hint).
        return max(1, left + HINT_SLACK)

    def streams(self, start: int, size: int) -> bool:
        """Whether the part of ``size`` bytes from ``start`` is streamed (sent while its bytes
        arrive) rather than plain (sent from memory once full).

        A plain part costs S3 less: SeaweedFS spends more CPU decoding an ``aws-chunked`` body
        than checking a plain one (2-3 ms per MiB, part by part: docs/benchmarks.md), and a
        plain part needs no framing on our side. But it goes out only once full, so only parts
        that the body will not end in are plain: with ``size_hint``, every part before the last planned
        one (while it fills, the plain part before it is sent, so little is left after the
        body's last byte); without it, none (the body may end in any of them).
        """
        return self.size_hint is None or start + size >= self.size_hint - HINT_SLACK


class Part:
    """One part after the first: its bytes fill ``buffer`` as they arrive. A *streamed* part's
    thread sends them while they arrive (``chunks``), ``CHUNK_BYTES`` at a time; a *plain*
    part's thread waits until it is full, or the body ended in it (``whole``), and sends it as
    one request. The bytes stay until S3 acknowledged the part, so a failed attempt is retried
    from them, and a streamed part the body ended in (the last, shorter than its declared size)
    is sent again from them, with its real size."""

    def __init__(
        self,
        number: int,
        size: int,
        changed: threading.Condition,
        count_handed: Callable[[int], None],
        *,
        streamed: bool,
        buffers: BufferPool | None = None,
    ) -> None:
        self.number = number
        self.size = size
        self.streamed = streamed
        self._buffers = PART_BUFFERS if buffers is None else buffers
        self.buffer = self._buffers.take(size)
        self._released = False
        self.filled = 0
        self.filled_at = time.monotonic()  # when the last bytes came
        #: Bytes handed to the connection by the furthest attempt (what the reader's lead counts).
        self.sent = 0
        self.ended = False  # no more bytes will come (the body ended, or the writer aborted)
        self.aborted = False
        #: The checksum of the bytes a streamed part sent (``part_checksum``), once all went out.
        self.checksum = b""
        #: How many bytes the sender waits for (None: it is not waiting for bytes).
        self.awaited: int | None = None
        self._changed = changed
        self._count_handed = count_handed  # (the writer's count of what went out, for its lead)

    @property
    def full(self) -> bool:
        return self.filled == self.size

    def fill(self, data: memoryview) -> int:
        """Copy as much of ``data`` as fits (the caller holds ``changed``); returns how much."""
        n = min(len(data), self.size - self.filled)
        self.buffer[self.filled : self.filled + n] = data[:n]
        self.filled += n
        self.filled_at = time.monotonic()
        return n

    @property
    def sender_may_go_on(self) -> bool:
        """The sender waits for bytes that are now in: the filler should notify ``changed``.
        (Not on every fill: a plain part's sender waits for the whole part, a streamed one's for
        its next ``CHUNK_BYTES``; waking it for each network chunk cost context switches.)"""
        return self.awaited is not None and self.filled >= self.awaited

    def release(self) -> None:
        """Give the buffer back for later parts: only once its sender finished and no byte
        will be added (full, ended, or no longer the reader's part)."""
        if not self._released:
            self._released = True
            self._buffers.give(self.buffer)

    def whole(self) -> memoryview:
        """The part's bytes once it is full or the body ended in it (raises TruncatedBody if
        the writer aborted, or left it without commit or abort)."""
        with self._changed:
            self._wait_for(self.size)
            if self.aborted:
                raise TruncatedBody(self.number)
        return memoryview(self.buffer)[: self.filled]  # (no byte is added once it is full or ended)

    def _wait_for(self, filled: int) -> None:
        """Wait (holding ``changed``) until ``filled`` bytes are in or no more will come. The
        stall bound counts from the last byte that came: a body that keeps coming, however
        slowly, is waited for; after ``STALL_SECONDS`` without a byte, commit or abort, the
        writer was left, and the part gives up (``aborted``)."""
        started = time.monotonic()
        try:
            while self.filled < filled and not self.ended and not self.aborted:
                left = max(started, self.filled_at) + STALL_SECONDS - time.monotonic()
                if left <= 0:
                    self.aborted = True
                    return
                # Woken when these bytes are in (``sender_may_go_on``), at the end, or at the
                # stall bound (measured again from the last bytes that came meanwhile).
                self.awaited = filled
                self._changed.wait(timeout=left)
        finally:
            self.awaited = None

    def chunks(self) -> Iterator[memoryview]:
        """The part's bytes as they arrive (raises TruncatedBody if the body ends first)."""
        checksum = PartChecksum()
        view = memoryview(self.buffer)
        for start in range(0, self.size, CHUNK_BYTES):
            end = min(start + CHUNK_BYTES, self.size)
            with self._changed:
                self._wait_for(end)
                if self.filled < end:
                    raise TruncatedBody(self.number)
            chunk = view[start:end]
            checksum.update(chunk)
            yield chunk
            with self._changed:
                if end > self.sent:
                    self._count_handed(end - self.sent)
                    self.sent = end
                    self._changed.notify_all()
        self.checksum = checksum.digest()
