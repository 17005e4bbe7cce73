"""The file's hash beside the event loop: the same digest whatever the chunks, in order, and a
reader that waits for it in a thread rather than on the event loop."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from tests import samples
from upload_service.ingest.body import BodyHeaders, receive_body
from upload_service.ingest.filehash import FileHash
from upload_service.ingest.sniff import TypeSniffer
from upload_service.settings import LimitSettings
from upload_service.storage.local import LocalObjectStore

KiB, MiB = 1024, 1024 * 1024


class GatedHelpers:
    """Stands in for the helper pool: each drain waits until ``open()`` (or ``timeout``), so a
    test can hold chunks in the queue; ``ran`` counts the drains handed over, ``timed_out`` those
    that went on because nobody opened the gate in time."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.gate = threading.Event()
        self.timeout = timeout
        self.ran = 0
        self.timed_out = 0

    def submit(self, fn: Callable[[], None]) -> Future[None]:
        self.ran += 1
        future: Future[None] = Future()

        def run() -> None:
            if not self.gate.wait(self.timeout):
                self.timed_out += 1
            fn()
            future.set_result(None)

        threading.Thread(target=run, daemon=True).start()
        return future


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedHelpers]:
    helpers = GatedHelpers()
    monkeypatch.setattr(FileHash, "_helpers", helpers)
    yield helpers
    helpers.gate.set()


def test_the_digest_is_the_files_whatever_the_chunks() -> None:
    data = random.Random(7).randbytes(9 * MiB + 5)
    view = memoryview(data)
    sizes = [1, 100, 65_535, 65_536, 256_000, 3 * MiB, 17, 300_001]
    chunks: list[Any] = []
    start, turn = 0, 0
    while start < len(data):
        size = sizes[turn % len(sizes)]
        piece = view[start : start + size]
        # bytes, views of bytes and a mutable buffer now and then (that one is hashed inline)
        chunks.append(bytes(piece) if turn % 3 == 0 else bytearray(piece) if turn % 7 == 0 else piece)
        start, turn = start + size, turn + 1
    file_hash = FileHash()
    for chunk in chunks:
        file_hash.update(chunk)
    assert file_hash.hexdigest() == hashlib.sha256(data).hexdigest()
    assert not file_hash.pending()


def test_a_small_chunk_waits_its_turn_behind_the_queued_ones(gated: GatedHelpers) -> None:
    head = bytes(FileHash.INLINE_BYTES)  # hashed inline
    queued = random.Random(1).randbytes(FileHash.OFFLOAD_BYTES)  # handed to the (held) helper
    small, mutable = b"tail", bytearray(b"mutable tail")  # inline-sized: must not overtake
    file_hash = FileHash()
    for chunk in (head, queued, small, mutable):
        file_hash.update(chunk)
    assert gated.ran == 1 and file_hash.pending()
    mutable[:] = b"changed after"  # a mutable chunk was copied into the hash or the queue already
    gated.gate.set()
    assert file_hash.hexdigest() == hashlib.sha256(head + queued + small + b"mutable tail").hexdigest()


def test_a_small_upload_never_leaves_the_callers_thread(gated: GatedHelpers) -> None:
    data = random.Random(2).randbytes(FileHash.INLINE_BYTES)
    file_hash = FileHash()
    for start in range(0, len(data), 256_000):
        file_hash.update(data[start : start + 256_000])
    assert gated.ran == 0 and not file_hash.pending()
    assert file_hash.hexdigest() == hashlib.sha256(data).hexdigest()


def test_behind_past_the_queue_bound_until_the_helper_catches_up(gated: GatedHelpers) -> None:
    file_hash = FileHash()
    file_hash.update(bytes(FileHash.INLINE_BYTES))
    chunk = bytes(256 * KiB)
    while not file_hash.behind():
        file_hash.update(chunk)
    assert file_hash.pending()
    gated.gate.set()
    file_hash.wait()
    assert not file_hash.behind()
    file_hash.wait(0)
    assert not file_hash.pending()


def test_the_reader_waits_for_a_slow_hash_without_holding_the_event_loop(
    gated: GatedHelpers, tmp_path: Path
) -> None:
    """With the helper held, the body is read up to the queue's bound and the reader then waits
    in a thread: the event loop keeps serving (here: a ticker), and the helper is let go only by
    that ticker. Were the wait on the event loop, the ticker could not run and the helper would
    go on only at its timeout."""
    gated.timeout = 3.0
    head = samples.pdf_bytes()
    data = head + random.Random(3).randbytes(12 * MiB - len(head))
    store = LocalObjectStore(tmp_path / "objects")
    store.ensure_buckets()
    key = "t1/0123456789abcdef0123456789abcdef/original"
    released_by: list[str] = []

    async def body():  # type: ignore[no-untyped-def]
        for start in range(0, len(data), 256_000):
            yield data[start : start + 256_000]
            await anyio.lowlevel.checkpoint()

    async def ticker() -> None:
        for _ in range(20):
            await anyio.sleep(0.01)
        released_by.append("ticker")
        gated.gate.set()

    async def main() -> str:
        writer = store.open_writer("upload-originals", key, content_type="application/pdf")
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(ticker)
            headers = BodyHeaders("application/pdf", None, "big.pdf")
            received = await receive_body(body(), headers, lambda _t: writer, LimitSettings(), TypeSniffer())
        await anyio.to_thread.run_sync(writer.commit, received.file.sha256)
        return received.file.sha256

    sha256 = anyio.run(main)
    assert released_by == ["ticker"] and gated.ran >= 1 and gated.timed_out == 0
    assert sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_bytes("upload-originals", key) == data
