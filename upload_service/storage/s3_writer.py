"""The S3 backend's ``ObjectWriter``: an original streamed to S3 while the body arrives.

Up to one part it stays in memory and goes out as one ``PUT`` at commit (from the event loop
with ``commit_async``: ``s3_loop.py``); past it a multipart
upload whose parts go from memory once full, but for those the body may end in, which stream
while their bytes arrive (``s3_direct.py`` sends them); the last part and
``CompleteMultipartUpload`` at commit. Any
abort (a refusal, a disconnect) aborts the multipart upload, retried in the background while
S3 is unreachable.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from typing import Any

import botocore.exceptions
import botocore.session
from anyio import CancelScope, to_thread

from upload_service.errors import StorageError
from upload_service.storage import keys
from upload_service.storage.base import StoredObject
from upload_service.storage.s3_direct import (
    CHUNK_BYTES,
    PART_CHECKSUM_ALGORITHM,
    DirectS3,
    TruncatedBody,
    part_checksum,
)
from upload_service.storage.s3_loop import LoopPuts
from upload_service.storage.s3_errors import checksum_text, translated
from upload_service.storage.s3_parts import Part, PartPlan

#: How far the reader may run ahead of what went out to S3 (the bytes left to send after the
#: body's last byte, besides the last part).
_LEAD_BYTES = 4 * CHUNK_BYTES
#: Pauses between retries of an abort that failed because S3 was unreachable (~10 minutes).
_ABORT_RETRY_SECONDS = (1, 2, 4, 8, 15, 30, 60, 120, 180, 180)

log = logging.getLogger(__name__)


class S3StreamingWriter:
    """An object sent to S3 while its bytes arrive (``ObjectWriter``).

    Up to one part is held in memory; a body that never grows past it goes out as one
    ``PutObject`` at ``commit`` (carrying the whole file's sha256 as
    ``x-amz-checksum-sha256``, a signed header the server verifies; sent by ``DirectS3``, or by
    ``LoopPuts`` from the event loop with ``commit_async``). The first byte
    past one part starts a multipart upload: the first part goes out from memory, and so does
    every later part the body cannot end in (a *plain* part, sent once full), while the rest
    are *streamed*: an ``UploadPart`` (of a size ``PartPlan`` chooses: 5 MiB, or cut to
    ``size_hint``) starts with its first byte and sends its bytes while they arrive,
    so the reader runs at most ``_LEAD_BYTES`` ahead of what went to S3 (``congested()`` until
    ``wait()`` has let it catch up). At most ``in_flight`` parts, the one filling included, are
    unacknowledged at once. A part sent from memory carries its CRC32C as a header; a streamed
    part's goes in the trailer of its ``aws-chunked`` body; the server verifies both (SeaweedFS answers
    ``InvalidDigest`` to a wrong one, and checks the parts' checksums again at
    ``CompleteMultipartUpload``). The part the body ends in is shorter than it declared: that
    request is dropped and the part sent again from memory with its real size and a
    header checksum. Such an object has no ``x-amz-meta-sha256``: its metadata is fixed when
    the upload starts, before the whole file's hash is known (the upload's DB row holds it).
    ``commit`` finishes the last part and sends ``CompleteMultipartUpload``; ``abort`` (or a
    failed commit) aborts the multipart upload, so nothing is left in the bucket.

    Memory: at most ``in_flight`` + 1 parts (the first, then the ones not yet
    acknowledged; a planned part is at most max(``part_bytes``, 10 MiB)), whatever the file size.
    A part's buffer goes back to the process's pool (``s3_parts.PART_BUFFERS``, a few idle
    buffers kept) once its sender is done and the reader let go of it.

    Not thread-safe: one reader calls ``write``/``wait``/``commit``/``abort`` in turn.
    """

    def __init__(
        self,
        client: Any,
        direct: DirectS3,
        loop_puts: LoopPuts,
        executor: concurrent.futures.Executor,
        bucket: str,
        key: str,
        *,
        content_type: str,
        part_bytes: int,
        in_flight: int,
        size_hint: int | None = None,
    ) -> None:
        self._client = client
        self._direct = direct
        self._loop_puts = loop_puts
        self._executor = executor
        self.bucket, self.key, self.content_type = bucket, key, content_type
        self._part_bytes = part_bytes
        self._in_flight = in_flight
        self._buffer = bytearray()
        #: CreateMultipartUpload, sent from a thread too (its parts wait for it there).
        self._created: concurrent.futures.Future[str] | None = None
        self._pending: list[concurrent.futures.Future[dict[str, Any]]] = []
        #: The parts being sent, by their sender's future (released once it is done).
        self._sending: dict[concurrent.futures.Future[dict[str, Any]], Part] = {}
        self._done: list[dict[str, Any]] = []
        self._next_part = 1
        self._current: Part | None = None
        #: Bytes past a full part while ``in_flight`` parts are unacknowledged (a chunk at most).
        self._overflow = bytearray()
        self._plan = PartPlan(part_bytes, size_hint)
        self._planned = part_bytes  # the object's bytes the parts started so far cover
        #: Notified by the senders whenever bytes went out or a part finished.
        self._changed = threading.Condition()
        self._streamed = 0  # bytes given to streamed parts
        self._handed = 0  # of those, bytes handed to S3 connections (updated by the senders)
        self.size = 0
        self._finished = False

    @property
    def multipart(self) -> bool:
        return self._created is not None

    def write(self, data: bytes | memoryview) -> None:
        if self._finished:
            raise RuntimeError("the writer is closed")
        self._reap(block=False)
        self.size += len(data)
        if self._created is None:
            self._buffer += data
            # A part leaves only once more bytes follow it: a body of exactly one part stays one PUT.
            if len(self._buffer) <= self._part_bytes:
                return
            first, rest = self._buffer, bytes(memoryview(self._buffer)[self._part_bytes :])
            del first[self._part_bytes :]
            self._buffer = bytearray()
            self._created = self._executor.submit(self._create)
            self._next_part = 2
            self._submit(self._upload_first, first)
            data = rest
        if self._overflow:
            self._overflow += data
            self._flush_overflow()
        else:
            self._stream(memoryview(data))

    def congested(self) -> bool:
        if self._created is None:
            return False
        if self._overflow:
            return True
        with self._changed:
            return self._streamed - self._handed >= _LEAD_BYTES

    def wait(self) -> None:
        """Block until the reader is within ``_LEAD_BYTES`` of what went out, and the bytes
        held back for want of a part slot are in a part (raises a part's error)."""
        while True:
            self._reap(block=False)
            self._flush_overflow()
            with self._changed:
                if self._streamed - self._handed <= _LEAD_BYTES // 2 and not self._overflow:
                    return
                self._changed.wait(timeout=1.0)

    def _flush_overflow(self) -> None:
        """Stream the held-back bytes once a part slot is free."""
        if self._overflow and len(self._pending) < self._in_flight:
            held, self._overflow = self._overflow, bytearray()
            self._stream(memoryview(held))

    def commit(self, sha256: str) -> StoredObject:
        keys.check_sha256(sha256)
        if self._finished:
            raise RuntimeError("the writer is closed")
        try:
            if self._created is None:
                with translated("put_object", self.bucket, self.key):
                    self._direct.put_object(
                        self.bucket, self.key, self._buffer, content_type=self.content_type, sha256=sha256
                    )
            else:
                while self._overflow:
                    self._reap(block=True)
                    self._flush_overflow()
                self._end_current(abort=False)
                while self._pending:
                    self._reap(block=True)
                parts = sorted(self._done, key=lambda p: int(p["PartNumber"]))
                with translated("complete_multipart_upload", self.bucket, self.key):
                    self._client.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=self.key,
                        UploadId=self._created.result(),
                        MultipartUpload={"Parts": parts},
                    )
        except BaseException:
            self._forget_failed_commit()
            raise
        return self._committed(sha256)

    async def commit_async(self, sha256: str) -> StoredObject:
        """``commit`` from the event loop: an original held in memory goes out as one ``PUT``
        on the loop itself (``LoopPuts.put_object``); a multipart one finishes in a thread."""
        if self._created is not None:
            return await to_thread.run_sync(self.commit, sha256)
        keys.check_sha256(sha256)
        if self._finished:
            raise RuntimeError("the writer is closed")
        try:
            with translated("put_object", self.bucket, self.key):
                await self._loop_puts.put_object(
                    self.bucket, self.key, self._buffer, content_type=self.content_type, sha256=sha256
                )
        except BaseException:
            with CancelScope(shield=True):
                await to_thread.run_sync(self._forget_failed_commit)
            raise
        return self._committed(sha256)

    def _committed(self, sha256: str) -> StoredObject:
        self._finished = True
        self._buffer = bytearray()
        return StoredObject(key=self.key, size=self.size, content_type=self.content_type, sha256=sha256)

    def _forget_failed_commit(self) -> None:
        with contextlib.suppress(StorageError):  # (retried in the background if S3 is down)
            self.abort()
        # A PUT or Complete whose answer was lost may have stored the object all the same:
        # the key is this upload's alone, so deleting it is always safe.
        with contextlib.suppress(botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, StorageError):
            self._client.delete_object(Bucket=self.bucket, Key=self.key)

    def abort(self) -> None:
        """Forget everything: stop the parts being sent, then abort the multipart upload."""
        if self._finished:
            return
        self._finished = True
        self._buffer = bytearray()
        self._overflow = bytearray()
        self._end_current(abort=True)
        for future in self._pending:
            future.cancel()
        concurrent.futures.wait(self._pending)
        self._pending = []
        sending, self._sending = self._sending, {}
        for part in sending.values():  # every sender is done and the reader let go
            part.release()
        if self._created is None:
            return
        try:
            upload_id = self._created.result()
        except StorageError:
            return  # never created: nothing to abort
        try:
            self._abort_upload(upload_id)
        except StorageError as exc:
            if not exc.transient:
                raise
            # S3 is unreachable right now (often the very reason for the abort): keep trying in
            # the background, so the parts do not stay behind once it is back.
            threading.Thread(
                target=self._abort_later, args=(upload_id,), name="s3-abort", daemon=True
            ).start()
            raise

    def _abort_upload(self, upload_id: str) -> None:
        with translated("abort_multipart_upload", self.bucket, self.key, ignore_codes={"NoSuchUpload"}):
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)

    def _abort_later(self, upload_id: str) -> None:
        for delay in _ABORT_RETRY_SECONDS:
            time.sleep(delay)
            try:
                self._abort_upload(upload_id)
            except StorageError as exc:
                if not exc.transient:
                    break
                continue
            log.info("aborted multipart upload of %s/%s after S3 came back", self.bucket, self.key)
            return
        log.error(
            "could not abort multipart upload %s of %s/%s; the bucket's lifecycle rule "
            "(AbortIncompleteMultipartUpload) must clean it up", upload_id, self.bucket, self.key
        )

    def _stream(self, data: memoryview) -> None:
        """Give ``data`` to the streamed parts, starting a part where one is full; with
        ``in_flight`` parts unacknowledged the rest is held back (``congested()``) until
        ``wait()`` finds a slot."""
        while data:
            with self._changed:
                if self._current is None or self._current.full:
                    if len(self._pending) >= self._in_flight:
                        self._overflow += data
                        return
                    number = self._next_part
                    self._next_part += 1
                    size = self._plan.size_at(self._planned)
                    streamed = self._plan.streams(self._planned, size)
                    self._planned += size
                    self._current = Part(number, size, self._changed, self._count_handed, streamed=streamed)
                    self._sending[self._submit(self._upload_part, self._current)] = self._current
                n = self._current.fill(data)
                if self._current.streamed:
                    self._streamed += n
                if self._current.sender_may_go_on:
                    self._changed.notify_all()
            data = data[n:]

    def _count_handed(self, n: int) -> None:
        """A streamed part handed ``n`` more bytes to its connection (its sender holds ``changed``)."""
        self._handed += n

    def _end_current(self, *, abort: bool) -> None:
        """No more bytes: the part being filled ends here (shorter than declared)."""
        with self._changed:
            if self._current is not None:
                self._current.ended = True
                self._current.aborted = abort
                self._changed.notify_all()
            self._current = None

    def _submit(self, job: Any, arg: Any) -> concurrent.futures.Future[dict[str, Any]]:
        if self._created is None:  # (never: the first part creates the upload)
            raise RuntimeError("no multipart upload")
        future = self._executor.submit(job, self._created, arg)
        future.add_done_callback(self._notify)
        self._pending.append(future)
        return future

    def _notify(self, _future: object) -> None:
        with self._changed:
            self._changed.notify_all()

    def _create(self) -> str:
        with translated("create_multipart_upload", self.bucket, self.key):
            response = self._client.create_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                ContentType=self.content_type,
                ChecksumAlgorithm=PART_CHECKSUM_ALGORITHM,
            )
        return str(response["UploadId"])

    def _upload_first(self, created: concurrent.futures.Future[str], part: bytearray) -> dict[str, Any]:
        return self._upload_from_memory(created.result(), 1, memoryview(part))

    def _upload_from_memory(self, upload_id: str, number: int, body: memoryview) -> dict[str, Any]:
        checksum = part_checksum(body)
        with translated("upload_part", self.bucket, self.key):
            etag = self._direct.upload_part(self.bucket, self.key, upload_id, number, body, checksum=checksum)
        return _completed_part(number, etag, checksum)

    def _upload_part(self, created: concurrent.futures.Future[str], part: Part) -> dict[str, Any]:
        upload_id = created.result()  # raises the creation's StorageError
        if part.streamed and not part.aborted:
            try:
                with translated("upload_part", self.bucket, self.key):
                    etag = self._direct.upload_part_streamed(
                        self.bucket, self.key, upload_id, part.number, part.size, part.chunks, lambda: part.checksum
                    )
                return _completed_part(part.number, etag, part.checksum)
            except TruncatedBody:
                pass  # the body ended inside this part (the last one): sent again with its real size
        # A plain part, or a streamed one the body ended in: from memory, once no byte will come.
        try:
            body = part.whole()
        except TruncatedBody:
            raise StorageError(f"s3 upload_part {self.bucket}/{self.key}: aborted", transient=False) from None
        return self._upload_from_memory(upload_id, part.number, body)

    def _reap(self, *, block: bool) -> None:
        """Collect finished parts (waiting for the oldest when ``block``); a failed part raises."""
        if not self._pending:
            return
        if block:
            concurrent.futures.wait(self._pending, return_when=concurrent.futures.FIRST_COMPLETED)
        still: list[concurrent.futures.Future[dict[str, Any]]] = []
        for future in self._pending:
            if future.done():
                self._release(future)
                self._done.append(future.result())  # raises the part's StorageError
            else:
                still.append(future)
        self._pending = still

    def _release(self, future: concurrent.futures.Future[dict[str, Any]]) -> None:
        """The buffer of a part whose sender is done, unless the reader may still fill it
        (a part that failed early; ``abort`` releases it once the reader let go)."""
        part = self._sending.get(future)
        if part is not None and (part is not self._current or part.full or part.ended):
            del self._sending[future]
            part.release()


def _completed_part(number: int, etag: str, checksum: bytes) -> dict[str, Any]:
    """A part as ``CompleteMultipartUpload`` lists it (with the checksum S3 checks again)."""
    return {"PartNumber": number, "ETag": etag, "ChecksumCRC32C": checksum_text(checksum)}
