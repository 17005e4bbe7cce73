"""The local store's streamed writer: what the ingest writes the original into, then commits or aborts."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import threading
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from tests import samples
from upload_service.errors import ErrorCode, ServiceError, StorageError
from upload_service.ingest.body import BodyHeaders, receive_body
from upload_service.ingest.sniff import TypeSniffer
from upload_service.settings import LimitSettings
from upload_service.storage import local
from upload_service.storage.local import LocalObjectStore, LocalObjectWriter

MiB = 1024 * 1024
BUCKET = "upload-originals"
KEY = "t1/0123456789abcdef0123456789abcdef/original"


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    store = LocalObjectStore(tmp_path / "objects")
    store.ensure_buckets()
    return store


@pytest.fixture
def failing_flushes(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Every background flush fails as a disk refusing a writeback does (EIO). Faked: a real
    writeback error needs a failing block device. The event is set once a flush has run: a
    flush still waiting for its thread when the commit comes is dropped, never run."""
    ran = threading.Event()

    def failing_flush(fd: int) -> None:
        ran.set()
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", failing_flush)
    return ran


def big_pdf(size: int) -> bytes:
    head = samples.pdf_bytes()
    return head + random.Random(size).randbytes(size - len(head))


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_a_written_and_committed_original_reads_back_with_its_metadata(store: LocalObjectStore) -> None:
    data = big_pdf(20 * MiB + 3)  # past a few flush ranges
    writer = store.open_writer(BUCKET, KEY, content_type="application/pdf")
    view = memoryview(data)
    for start in range(0, len(data), 300_001):
        writer.write(view[start : start + 300_001])
    stored = writer.commit(hashlib.sha256(data).hexdigest())
    assert writer.flushes >= 1  # flushed while it was written, not only at commit
    assert stored.size == len(data)
    assert store.get_bytes(BUCKET, KEY) == data
    head = store.head(BUCKET, KEY)
    assert (head.size, head.content_type, head.sha256) == (len(data), "application/pdf", hashlib.sha256(data).hexdigest())


def test_an_aborted_writer_leaves_nothing(store: LocalObjectStore, tmp_path: Path) -> None:
    writer = store.open_writer(BUCKET, KEY, content_type="application/pdf")
    writer.write(big_pdf(9 * MiB))
    assert writer.flushes == 1  # a flush started: the abort waits for it, then deletes
    writer.abort()
    writer.abort()  # twice is fine
    assert not store.exists(BUCKET, KEY)
    assert leftovers(tmp_path / "objects") == []


def test_a_failed_background_flush_fails_the_commit_and_leaves_nothing(
    store: LocalObjectStore, tmp_path: Path, failing_flushes: threading.Event
) -> None:
    """The kernel reports a failed writeback to one fsync of the file only: when that was the
    background flush's, the commit must fail, not store a file whose bytes may not be on disk."""
    data = big_pdf(9 * MiB)
    writer = store.open_writer(BUCKET, KEY, content_type="application/pdf")
    writer.write(data)
    assert writer.flushes == 1
    assert failing_flushes.wait(10)  # the flush has run (and failed) before the commit
    with pytest.raises(StorageError) as caught:
        writer.commit(hashlib.sha256(data).hexdigest())
    assert caught.value.transient  # an I/O error may pass: the client is told to retry
    assert not store.exists(BUCKET, KEY)
    assert leftovers(tmp_path / "objects") == []


def test_a_failed_background_flush_stops_the_writes_that_follow(
    store: LocalObjectStore, failing_flushes: threading.Event
) -> None:
    """The upload fails at its next write past the flush, not only at commit: nothing more is
    written into a file the disk has refused, and the error is not lost to a later flush."""
    writer = store.open_writer(BUCKET, KEY, content_type="application/pdf")
    chunks = split(big_pdf(40 * MiB), MiB)
    written = 0
    with pytest.raises(StorageError) as caught:
        for chunk in chunks:
            writer.write(chunk)
            written += 1
            if writer.flushes:  # let the flush run (and fail) however busy the machine is
                assert failing_flushes.wait(10)
    assert caught.value.transient
    assert writer.flushes == 1  # the failed flush was not followed by another
    assert written < len(chunks)
    writer.abort()
    assert not store.exists(BUCKET, KEY)


def test_a_commit_does_not_wait_behind_other_writers_flushes(store: LocalObjectStore) -> None:
    """Every flush thread busy (other uploads' flushes): this writer's flush, still waiting for
    a thread, is dropped at commit, and the commit's own fsync makes the file durable."""
    release = threading.Event()
    busy = [local._FLUSHES.submit(release.wait) for _ in range(local.FLUSH_THREADS)]
    try:
        data = big_pdf(9 * MiB)
        writer = store.open_writer(BUCKET, KEY, content_type="application/pdf")
        writer.write(data)
        assert writer.flushes == 1
        committed = threading.Thread(target=writer.commit, args=(hashlib.sha256(data).hexdigest(),))
        committed.start()
        committed.join(30)
        assert not committed.is_alive()
        assert store.get_bytes(BUCKET, KEY) == data
    finally:
        release.set()
        for task in busy:
            task.result()


def receive(store: LocalObjectStore, chunks: list[bytes], *, limits: LimitSettings | None = None,
            disconnect_after: int | None = None) -> tuple[object, list[LocalObjectWriter]]:
    """The real ingest (receive_body) into the local store's writer, as the service drives it:
    commit on success, abort whatever happened."""
    writers: list[LocalObjectWriter] = []

    def open_sink(detected: str) -> LocalObjectWriter:
        writer = store.open_writer(BUCKET, KEY, content_type=detected)
        writers.append(writer)
        return writer

    async def body():  # type: ignore[no-untyped-def]
        for index, chunk in enumerate(chunks):
            if disconnect_after is not None and index == disconnect_after:
                raise ConnectionResetError("client went away")
            yield chunk
            await anyio.lowlevel.checkpoint()

    async def main() -> object:
        try:
            received = await receive_body(
                body(), BodyHeaders("application/pdf", None, "big.pdf"), open_sink, limits or LimitSettings(), TypeSniffer()
            )
            await anyio.to_thread.run_sync(writers[0].commit, received.file.sha256)
            return received
        finally:
            if writers:
                await anyio.to_thread.run_sync(writers[0].abort)

    return anyio.run(main), writers


def split(data: bytes, size: int = 255_000) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def test_a_large_body_through_the_ingest_is_stored_whole(store: LocalObjectStore) -> None:
    data = big_pdf(30 * MiB + 17)
    received, _ = receive(store, split(data))
    assert received.file.sha256 == hashlib.sha256(data).hexdigest()  # type: ignore[attr-defined]
    assert store.get_bytes(BUCKET, KEY) == data


def test_a_disconnect_mid_body_leaves_nothing(store: LocalObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ConnectionResetError):
        receive(store, split(big_pdf(30 * MiB)), disconnect_after=60)  # ~15 MiB in: past a writeback range
    assert not store.exists(BUCKET, KEY)
    assert leftovers(tmp_path / "objects") == []


def test_a_body_over_its_limit_mid_way_leaves_nothing(store: LocalObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ServiceError) as caught:
        receive(store, split(big_pdf(30 * MiB)), limits=LimitSettings(max_pdf_bytes=12 * MiB))
    assert caught.value.code is ErrorCode.FILE_TOO_LARGE
    assert leftovers(tmp_path / "objects") == []


def test_a_refused_type_opens_no_file(store: LocalObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ServiceError) as caught:
        receive(store, split(samples.html_bytes() + b" " * (4 * MiB)))
    assert caught.value.code is ErrorCode.UNSUPPORTED_MEDIA_TYPE  # decided on the first 2 KiB
    assert leftovers(tmp_path / "objects") == []
