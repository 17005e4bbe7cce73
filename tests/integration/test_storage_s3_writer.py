"""The S3 writer of the accept path against a real SeaweedFS: a body up to one part is one PUT
(signed and sent without boto3's per-call machinery, from a thread with ``commit`` or from the
event loop with ``commit_async``) whose bytes the server checks against the ingest's sha256; a
larger one is a multipart upload whose parts stream while the bytes arrive (or go whole, once
full, where the body cannot end), each checked by the server against its own CRC32C. Whatever
the path, the stored bytes are the file's, a wrong checksum or a server failure is a
``StorageError``, and an abort leaves no multipart upload behind."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import botocore.session
import pytest
import uvloop

from upload_service.errors import StorageError
from upload_service.settings import MiB, StorageSettings
from upload_service.storage import keys, s3_parts
from upload_service.storage.s3 import S3ObjectStore
from upload_service.storage.base import StoredObject
from upload_service.storage.s3_direct import CHUNK_BYTES, DirectS3, part_checksum
from tests.fixtures.services import S3Service

PART = 5 * MiB
TENANT = "acme"


@pytest.fixture
def store(s3_settings: StorageSettings) -> S3ObjectStore:
    return S3ObjectStore(s3_settings.model_copy(update={"multipart_part_bytes": PART}))


def pieces(data: bytes, size: int = 50_000) -> Iterator[memoryview]:
    """Chunks that never line up with a part boundary, as a network body's."""
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield view[start : start + size]


def write_all(writer: Any, data: bytes) -> None:
    for piece in pieces(data):
        writer.write(piece)
        if writer.congested():
            writer.wait()


def open_uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


#: How the accept path commits: ``commit`` (in a thread) or ``commit_async`` (on the event loop:
#: asyncio's, and uvloop's, which the API runs).
WAYS = ["commit", "commit_async", "commit_async_uvloop"]


def commit(store: S3ObjectStore, writer: Any, sha256: str, way: str) -> StoredObject:
    if way == "commit":
        return writer.commit(sha256)  # type: ignore[no-any-return]

    async def on_a_loop() -> StoredObject:
        try:
            return await writer.commit_async(sha256)  # type: ignore[no-any-return]
        finally:
            await store.aclose()  # as the API's shutdown: the loop's connections closed

    factory = uvloop.new_event_loop if way == "commit_async_uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(on_a_loop())


@pytest.mark.parametrize("way", WAYS)
def test_a_body_up_to_one_part_is_one_put_the_server_checked(
    store: S3ObjectStore, s3: Any, s3_settings: StorageSettings, way: str
) -> None:
    bucket = s3_settings.originals_bucket
    for size in (9, 20 * 1024, 100_000, PART):
        data = os.urandom(size)
        sha256 = hashlib.sha256(data).hexdigest()
        key = keys.original_key(TENANT, f"small{size}")
        writer = store.open_writer(bucket, key, content_type="application/pdf")
        write_all(writer, data)
        stored = commit(store, writer, sha256, way)
        assert (stored.size, stored.sha256) == (size, sha256)
        assert store.get_bytes(bucket, key) == data
        assert store.head(bucket, key).sha256 == sha256  # x-amz-meta-sha256
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert head["ContentType"] == "application/pdf"
        assert head["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(sha256)).decode()
        assert "-" not in head["ETag"]  # one PUT, not a multipart upload
    assert open_uploads(s3, bucket) == []


@pytest.mark.parametrize("way", WAYS)
def test_a_wrong_sha256_is_refused_by_the_server_and_nothing_is_stored(
    store: S3ObjectStore, s3_settings: StorageSettings, way: str
) -> None:
    bucket = s3_settings.originals_bucket
    key = keys.original_key(TENANT, "wrong")
    writer = store.open_writer(bucket, key, content_type="application/pdf")
    writer.write(b"%PDF-1.4 actual bytes")
    with pytest.raises(StorageError) as info:
        commit(store, writer, hashlib.sha256(b"%PDF-1.4 claimed bytes").hexdigest(), way)
    assert info.value.transient is False
    assert "BadDigest" in str(info.value) or "Mismatch" in str(info.value)
    assert not store.exists(bucket, key)
    writer.abort()  # (a no-op after a failed commit)


@pytest.mark.parametrize("way", WAYS)
def test_a_missing_bucket_and_a_dead_endpoint_are_storage_errors(s3_settings: StorageSettings, way: str) -> None:
    """As boto3's errors are: a missing bucket is permanent; an endpoint nobody answers at is
    transient (the API answers 503 and the client may retry)."""
    missing = S3ObjectStore(s3_settings.model_copy(update={"originals_bucket": "no-such-bucket-here"}))
    writer = missing.open_writer("no-such-bucket-here", keys.original_key(TENANT, "x"), content_type="image/png")
    writer.write(b"x")
    with pytest.raises(StorageError) as info:
        commit(missing, writer, hashlib.sha256(b"x").hexdigest(), way)
    assert info.value.transient is False
    assert "NoSuchBucket" in str(info.value)

    dead = S3ObjectStore(
        s3_settings.model_copy(
            update={"endpoint_url": "http://127.0.0.1:9", "connect_timeout_seconds": 0.5, "max_attempts": 2}
        )
    )
    writer = dead.open_writer(s3_settings.originals_bucket, keys.original_key(TENANT, "y"), content_type="image/png")
    writer.write(b"y")
    with pytest.raises(StorageError) as info:
        commit(dead, writer, hashlib.sha256(b"y").hexdigest(), way)
    assert info.value.transient is True
    assert "endpoint unavailable" in str(info.value)


@pytest.mark.parametrize("way", WAYS)
def test_a_put_whose_answer_does_not_come_is_sent_again(
    s3_service: S3Service, s3_settings: StorageSettings, s3: Any, way: str
) -> None:
    """The server stops answering mid-PUT (paused): the attempt times out and the PUT is
    retried, as botocore's standard mode would, until the server is back; the object is the
    file's bytes, stored once."""
    store = S3ObjectStore(s3_settings.model_copy(update={"read_timeout_seconds": 1.0, "max_attempts": 6}))
    bucket, key = s3_settings.originals_bucket, keys.original_key(TENANT, f"retried-{way}")
    data = os.urandom(50_000)
    writer = store.open_writer(bucket, key, content_type="application/pdf")
    writer.write(data)
    s3_service.process.pause()
    resume = threading.Timer(2.5, s3_service.process.resume)
    resume.start()
    try:
        stored = commit(store, writer, hashlib.sha256(data).hexdigest(), way)
    finally:
        resume.join()
    assert stored.size == len(data)
    assert store.get_bytes(bucket, key) == data
    assert store.list_keys(bucket, f"{TENANT}/") == [key]
    assert open_uploads(s3, bucket) == []


def sent_parts(store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """The numbers of the parts the store's own ``DirectS3`` sends, by kind of request: "plain"
    (from memory, the checksum a header) or "streamed" (``aws-chunked``, sent while the bytes
    arrive). The requests themselves go to the server unchanged."""
    sent: dict[str, list[int]] = {"plain": [], "streamed": []}
    direct = store._direct
    plain, streamed = direct.upload_part, direct.upload_part_streamed

    def record_plain(bucket: str, key: str, upload_id: str, number: int, *args: Any, **kwargs: Any) -> str:
        sent["plain"].append(number)
        return plain(bucket, key, upload_id, number, *args, **kwargs)

    def record_streamed(bucket: str, key: str, upload_id: str, number: int, *args: Any, **kwargs: Any) -> str:
        sent["streamed"].append(number)
        return streamed(bucket, key, upload_id, number, *args, **kwargs)

    monkeypatch.setattr(direct, "upload_part", record_plain)
    monkeypatch.setattr(direct, "upload_part_streamed", record_streamed)
    return sent


@pytest.mark.parametrize(
    ("size", "hint", "plain", "streamed"),
    [
        # No hint: any part may be the last, so every part after the first streams, and the one
        # the body ends in (shorter than declared) goes again from memory with its real size.
        (PART + 1, None, [1, 2], [2]),
        (3 * PART + 12_345, None, [1, 4], [2, 3, 4]),
        # The body's size known up front: the parts end on the body's end (no part sent twice).
        (3 * PART + 12_345, 3 * PART + 12_345, [1], [2, 3]),
        # An upper bound (a form's request length): the last bytes go as a small last part
        # (which ends short of its declared size, so it goes again from memory).
        (3 * PART + 12_345, 3 * PART + 12_345 + 700, [1, 3], [2, 3]),
        (2 * PART + 3 * MiB, 2 * PART + 3 * MiB, [1], [2, 3]),
        # Five parts planned (5, 5, 5, 9.76 MiB, then the last 256 KiB): the first three go out
        # whole once full (plain); the two the body may end in stream.
        (5 * PART + 12_345, 5 * PART + 12_345, [1, 2, 3], [4, 5]),
        # A bound far above the body (a form with a large field after the file): the body ends
        # in a plain part, which goes out with its real size.
        (3 * PART + 12_345, 6 * PART, [1, 2, 3, 4], []),
    ],
)
def test_a_streamed_original_is_the_files_bytes(
    store: S3ObjectStore,
    s3: Any,
    s3_settings: StorageSettings,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
    hint: int | None,
    plain: list[int],
    streamed: list[int],
) -> None:
    """Whatever the plan, the object is the file's bytes. A plain part costs the server less
    than an ``aws-chunked`` one but leaves only once full; either carries its SHA-256, which
    the server checks (the wrong-checksum tests)."""
    sent = sent_parts(store, monkeypatch)
    bucket = s3_settings.originals_bucket
    data = os.urandom(size)
    sha256 = hashlib.sha256(data).hexdigest()
    key = keys.original_key(TENANT, "big")
    writer = store.open_writer(bucket, key, content_type="application/pdf", size_hint=hint)
    write_all(writer, data)
    stored = writer.commit(sha256)
    assert (stored.size, stored.sha256) == (size, sha256)
    got = store.get_bytes(bucket, key)
    assert len(got) == size and hashlib.sha256(got).hexdigest() == sha256
    assert {kind: sorted(numbers) for kind, numbers in sent.items()} == {"plain": plain, "streamed": streamed}
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ETag"].strip('"').endswith(f"-{max(plain + streamed)}"), head["ETag"]
    assert open_uploads(s3, bucket) == []


@pytest.mark.parametrize("hint", [None, 6 * PART], ids=["streamed part", "plain part"])
def test_a_part_waits_for_a_slow_body_but_not_for_a_silent_one(
    store: S3ObjectStore, s3: Any, s3_settings: StorageSettings, monkeypatch: pytest.MonkeyPatch, hint: int | None
) -> None:
    """The stall bound (300 s; 1 s here) counts from the last byte that came, not from the
    part's start or its current chunk's: a body that keeps coming, however slowly, is stored;
    one that stops is not."""
    monkeypatch.setattr(s3_parts, "STALL_SECONDS", 1.0)
    bucket = s3_settings.originals_bucket
    piece = os.urandom(16 * 1024)

    def started(name: str) -> tuple[str, Any, bytearray]:
        key = keys.original_key(TENANT, name)
        writer = store.open_writer(bucket, key, content_type="application/pdf", size_hint=hint)
        data = bytearray(os.urandom(PART + 1))
        write_all(writer, data)  # part 1 goes out; part 2 starts filling
        return key, writer, data

    key, writer, data = started("slow")
    for _ in range(12):  # 2.4 s in all, never 1 s without a byte; less than one 256 KiB chunk
        time.sleep(0.2)
        writer.write(piece)
        data += piece
    writer.commit(hashlib.sha256(data).hexdigest())
    assert store.get_bytes(bucket, key) == data

    key, writer, data = started("silent")
    time.sleep(2.5)
    with pytest.raises(StorageError):
        writer.write(piece)
        writer.commit(hashlib.sha256(data + piece).hexdigest())
    writer.abort()
    assert open_uploads(s3, bucket) == []
    assert not store.exists(bucket, key)


@pytest.mark.parametrize("hint", [None, 6 * PART], ids=["streamed part", "plain part"])
def test_an_abort_while_parts_stream_leaves_no_multipart_upload(
    store: S3ObjectStore, s3: Any, s3_settings: StorageSettings, hint: int | None
) -> None:
    bucket = s3_settings.originals_bucket
    key = keys.original_key(TENANT, "gone")
    writer = store.open_writer(bucket, key, content_type="application/pdf", size_hint=hint)
    # Part 1 sent, part 2 done, part 3 streaming or (with the hint) filling to go out whole.
    write_all(writer, os.urandom(2 * PART + MiB))
    assert [u["Key"] for u in open_uploads(s3, bucket)] == [key]
    writer.abort()
    assert open_uploads(s3, bucket) == []
    assert not store.exists(bucket, key)


class RecordingPool(s3_parts.BufferPool):
    """The process's pool, noting which buffers it handed out that an earlier part had used."""

    def __init__(self) -> None:
        super().__init__(keep=3)
        self.reused = 0

    def take(self, size: int) -> Any:
        idle = {id(buffer) for buffer in self._idle}
        buffer = super().take(size)
        self.reused += id(buffer) in idle
        return buffer


def test_part_buffers_serve_later_originals_and_come_back_after_an_abort(
    store: S3ObjectStore, s3: Any, s3_settings: StorageSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts take their buffers from the process's pool and give them back once sent: the next
    original's parts fill buffers an earlier one used, and send only their own bytes (a short
    last part over an older, longer one's leftovers included); an abort gives back every part's
    buffer once its sender stopped, and leaves no multipart upload."""
    pool = RecordingPool()
    monkeypatch.setattr(s3_parts, "PART_BUFFERS", pool)
    bucket = s3_settings.originals_bucket

    def stream(name: str, size: int) -> bytes:
        data = os.urandom(size)
        writer = store.open_writer(bucket, keys.original_key(TENANT, name), content_type="application/pdf")
        write_all(writer, data)
        writer.commit(hashlib.sha256(data).hexdigest())
        return data

    stream("first", 3 * PART + 12_345)
    assert pool.idle >= 1
    reused = pool.reused  # (part 4 may already have taken part 2's)
    second = stream("second", 2 * PART + 777)  # its last part: 777 bytes in a used buffer
    assert pool.reused > reused
    assert store.get_bytes(bucket, keys.original_key(TENANT, "second")) == second

    writer = store.open_writer(bucket, keys.original_key(TENANT, "dropped"), content_type="application/pdf")
    write_all(writer, os.urandom(2 * PART + MiB))  # part 3 filling (part 2's sent or sending)
    during = pool.idle
    writer.abort()
    assert pool.idle > during  # the parts' buffers came back
    assert open_uploads(s3, bucket) == []


@pytest.mark.parametrize("sent", ["plain", "streamed"])
def test_a_part_with_a_wrong_checksum_is_refused(
    s3: Any, s3_settings: StorageSettings, sent: str
) -> None:
    """A part's CRC32C travels in a header (plain) or in its ``aws-chunked`` trailer (streamed),
    and the server checks it: a wrong one is refused, the right one listed with the part."""
    bucket = s3_settings.originals_bucket
    key = keys.original_key(TENANT, f"checksum-{sent}")
    direct = DirectS3(s3_settings, s3, botocore.session.Session())
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32C")["UploadId"]
    data = os.urandom(PART)
    view = memoryview(data)

    def chunks() -> Iterator[memoryview]:
        return (view[i : i + CHUNK_BYTES] for i in range(0, PART, CHUNK_BYTES))

    def send(checksum: bytes) -> str:
        if sent == "plain":
            return direct.upload_part(bucket, key, upload_id, 1, data, checksum=checksum)
        return direct.upload_part_streamed(bucket, key, upload_id, 1, PART, chunks, lambda: checksum)

    try:
        with pytest.raises(botocore.exceptions.ClientError) as info:
            send(part_checksum(data[:-1] + bytes([data[-1] ^ 1])))  # one bit off in the last byte
        assert info.value.response["Error"]["Code"] in {"InvalidDigest", "BadDigest"}
        assert s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", []) == []
        etag = send(part_checksum(data))
        listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
        assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in listed] == [(1, PART, etag)]
    finally:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
