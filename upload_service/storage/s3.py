"""The S3 backend: the only module that imports boto3/botocore (and s3transfer).

It works against AWS S3 and S3-compatible servers (SeaweedFS, MinIO). Every SDK failure leaves
this module as a ``StorageError``: network faults, timeouts, 5xx and throttling are transient
(retrying later may help); a missing key is ``ObjectNotFound``; 403 and other 4xx are permanent.
Messages carry the operation, bucket, key, error code and HTTP status, never credentials.

Integrity: the sha256 computed at ingest is stored as ``x-amz-meta-sha256`` for consumers, and
also sent as an S3 checksum so that the server verifies the bytes it received: single-request
puts carry the precomputed ``ChecksumSHA256`` (a mismatch is refused with ``BadDigest``);
multipart puts use ``ChecksumAlgorithm=SHA256`` (per-part checksums, verified per part).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import logging
import mmap
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import boto3.exceptions
import botocore.exceptions
import botocore.session
import s3transfer.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from upload_service.errors import ObjectNotFound, StorageError
from upload_service.settings import StorageSettings
from upload_service.storage import keys
from upload_service.storage.base import StoredObject, content_disposition
from upload_service.storage.s3_direct import CHUNK_BYTES, DirectS3, TruncatedBody

#: Error codes that mean "slow down / try again", whatever their HTTP status.
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
#: Exceptions of the transfer layer (multipart uploads, ranged downloads).
_TRANSFER_ERRORS: tuple[type[Exception], ...] = (
    boto3.exceptions.Boto3Error,
    s3transfer.exceptions.RetriesExceededError,
    s3transfer.exceptions.S3UploadFailedError,
    s3transfer.exceptions.S3DownloadFailedError,
    s3transfer.exceptions.S3ValidationError,
)
_TRANSIENT_TRANSFER_ERRORS: tuple[type[Exception], ...] = (
    boto3.exceptions.RetriesExceededError,
    s3transfer.exceptions.RetriesExceededError,
    s3transfer.exceptions.S3DownloadFailedError,
    s3transfer.exceptions.S3ValidationError,
)
#: S3 deletes at most this many keys per DeleteObjects request.
_DELETE_BATCH = 1000
#: Threads that send the parts of streamed originals (shared by all uploads of a process; each
#: upload has at most ``multipart_parts_in_flight`` parts among them). A streamed part holds its
#: thread while its bytes arrive, so this bounds the large uploads that stream at once; the
#: pool only starts threads as they are needed.
_PART_THREADS = 64
#: How far the reader may run ahead of what went out to S3 (the bytes left to send after the
#: body's last byte, besides the last part).
_LEAD_BYTES = 4 * CHUNK_BYTES
#: S3's smallest part (all but the last part of an upload).
_MIN_PART_BYTES = 5 * 1024 * 1024
#: With a size hint the planned parts end this far before it: what follows (a form's closing
#: boundary and later fields, or the file's last bytes) is sent as a small last part.
_HINT_SLACK = 256 * 1024
#: A streamed part whose writer got no byte, commit or abort for this long gives up.
_STALL_SECONDS = 300.0
#: Pauses between retries of an abort that failed because S3 was unreachable (~10 minutes).
_ABORT_RETRY_SECONDS = (1, 2, 4, 8, 15, 30, 60, 120, 180, 180)

log = logging.getLogger(__name__)


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: botocore.exceptions.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _translate(exc: BaseException, *, op: str, bucket: str, key: str | None) -> StorageError:
    """Map one boto3/botocore exception (or a wrapper around one) to a StorageError."""
    where = f"s3 {op} {bucket}/{key}" if key is not None else f"s3 {op} {bucket}"
    if isinstance(exc, botocore.exceptions.ClientError):
        code, status = _code(exc), _status(exc)
        if code == "NoSuchBucket" or (status == 404 and key is None):
            return StorageError(f"{where}: bucket does not exist ({code or status})", transient=False)
        if key is not None and (code in _NOT_FOUND_CODES or status == 404):
            return ObjectNotFound(key)
        transient = status >= 500 or status in (408, 429) or code in _TRANSIENT_CODES
        return StorageError(f"{where}: {code or 'error'} (HTTP {status})", transient=transient)
    if isinstance(exc, (botocore.exceptions.HTTPClientError, botocore.exceptions.ConnectionError)):
        # Connection refused/reset/closed, connect and read timeouts, broken response streams.
        return StorageError(f"{where}: endpoint unavailable ({type(exc).__name__})", transient=True)
    if isinstance(exc, (botocore.exceptions.ChecksumError, botocore.exceptions.IncompleteReadError)):
        return StorageError(f"{where}: corrupted transfer ({type(exc).__name__})", transient=True)
    if isinstance(exc, _TRANSFER_ERRORS):
        # boto3/s3transfer wrappers (S3UploadFailedError, RetriesExceededError, ...) carry the
        # real error as ``last_exception`` or as the chained exception; their own text repeats
        # the local file name, so it is not used.
        inner = getattr(exc, "last_exception", None) or exc.__cause__ or exc.__context__
        if isinstance(inner, BaseException) and inner is not exc:
            return _translate(inner, op=op, bucket=bucket, key=key)
        # Retries used up, or the object changed size/ETag while being downloaded.
        transient = isinstance(exc, _TRANSIENT_TRANSFER_ERRORS)
        return StorageError(f"{where}: transfer failed ({type(exc).__name__})", transient=transient)
    # Missing/partial credentials, parameter validation, configuration: retrying won't help.
    return StorageError(f"{where}: {type(exc).__name__}", transient=False)


@contextlib.contextmanager
def _translated(
    op: str, bucket: str, key: str | None = None, *, ignore_codes: frozenset[str] | set[str] = frozenset()
) -> Iterator[None]:
    """Run the block, turning SDK exceptions into StorageError; ``ignore_codes`` are S3 error
    codes that mean the goal is already reached (they end the block silently)."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        if _code(exc) in ignore_codes:
            return
        raise _translate(exc, op=op, bucket=bucket, key=key) from exc
    except (botocore.exceptions.BotoCoreError, *_TRANSFER_ERRORS) as exc:
        raise _translate(exc, op=op, bucket=bucket, key=key) from exc


def _b64_sha256(sha256: str) -> str:
    return base64.b64encode(bytes.fromhex(sha256)).decode("ascii")


class S3ObjectStore:
    """``ObjectStore`` on an S3 API. The boto3 client is thread-safe and shared by all calls."""

    def __init__(self, settings: StorageSettings) -> None:
        self._settings = settings
        # A private session: boto3's module-level default session is a global we don't share.
        core = botocore.session.Session()
        session = boto3.session.Session(botocore_session=core)
        self._client: Any = session.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            aws_access_key_id=(settings.access_key_id.get_secret_value() if settings.access_key_id else None),
            aws_secret_access_key=(
                settings.secret_access_key.get_secret_value() if settings.secret_access_key else None
            ),
            config=Config(
                s3={"addressing_style": settings.addressing_style},
                signature_version="s3v4",
                connect_timeout=settings.connect_timeout_seconds,
                read_timeout=settings.read_timeout_seconds,
                retries={"max_attempts": settings.max_attempts, "mode": "standard"},
            ),
        )
        self._transfer = TransferConfig(
            multipart_threshold=settings.multipart_threshold_bytes,
            multipart_chunksize=settings.multipart_threshold_bytes,
        )
        #: The accept path's PutObject/UploadPart, without boto3's per-call machinery.
        self._direct = DirectS3(settings, self._client, core)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        # Presigned URLs are signed for the host clients reach (SigV4 signs Host): a second
        # client on ``public_endpoint_url``, used only to sign (it never sends a request).
        self._presigner: Any = self._client
        if settings.public_endpoint_url and settings.public_endpoint_url != settings.endpoint_url:
            self._presigner = session.client(
                "s3",
                endpoint_url=settings.public_endpoint_url,
                region_name=settings.region,
                aws_access_key_id=(settings.access_key_id.get_secret_value() if settings.access_key_id else None),
                aws_secret_access_key=(
                    settings.secret_access_key.get_secret_value() if settings.secret_access_key else None
                ),
                config=Config(s3={"addressing_style": settings.addressing_style}, signature_version="s3v4"),
            )

    def __repr__(self) -> str:
        return f"S3ObjectStore(endpoint={self._settings.endpoint_url!r}, region={self._settings.region!r})"

    # -- writes ---------------------------------------------------------------------------

    def put_file(self, bucket: str, key: str, path: Path, *, content_type: str, sha256: str) -> StoredObject:
        keys.check_key(key)
        keys.check_content_type(content_type)
        keys.check_sha256(sha256)
        size = os.stat(path).st_size
        extra: dict[str, Any] = {"ContentType": content_type, "Metadata": {"sha256": sha256}}
        if size < self._settings.multipart_threshold_bytes:
            extra["ChecksumSHA256"] = _b64_sha256(sha256)  # one PUT: the server checks our hash
        else:
            extra["ChecksumAlgorithm"] = "SHA256"  # multipart: per-part SHA-256 checksums
        with _translated("put_file", bucket, key):
            if size < self._settings.multipart_threshold_bytes:
                # One PUT streamed from the file: the transfer manager's thread pool costs more
                # than the whole request for the small files most uploads are.
                with path.open("rb") as body:
                    self._client.put_object(Bucket=bucket, Key=key, Body=body, **extra)
            else:
                self._client.upload_file(str(path), bucket, key, ExtraArgs=extra, Config=self._transfer)
        return StoredObject(key=key, size=size, content_type=content_type, sha256=sha256)

    def put_bytes(self, bucket: str, key: str, data: bytes, *, content_type: str, sha256: str) -> StoredObject:
        keys.check_key(key)
        keys.check_content_type(content_type)
        keys.check_sha256(sha256)
        with _translated("put_bytes", bucket, key):
            self._client.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                Metadata={"sha256": sha256},
                ChecksumSHA256=_b64_sha256(sha256),
            )
        return StoredObject(key=key, size=len(data), content_type=content_type, sha256=sha256)

    def open_writer(
        self, bucket: str, key: str, *, content_type: str, size_hint: int | None = None
    ) -> S3StreamingWriter:
        keys.check_key(key)
        keys.check_content_type(content_type)
        with self._executor_lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(_PART_THREADS, thread_name_prefix="s3-part")
        return S3StreamingWriter(
            self._client,
            self._direct,
            self._executor,
            bucket,
            key,
            content_type=content_type,
            part_bytes=self._settings.multipart_part_bytes,
            in_flight=self._settings.multipart_parts_in_flight,
            size_hint=size_hint,
        )

    def abort_stale_writes(self, bucket: str, *, older_than_seconds: float) -> int:
        """Abort multipart uploads initiated more than ``older_than_seconds`` ago."""
        aborted = 0
        with _translated("abort_stale_writes", bucket):
            now = time.time()
            for page in self._client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
                for upload in page.get("Uploads", []):
                    initiated = upload.get("Initiated")
                    if initiated is None or now - initiated.timestamp() < older_than_seconds:
                        continue
                    with _translated("abort_multipart_upload", bucket, str(upload["Key"]), ignore_codes={"NoSuchUpload"}):
                        self._client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    aborted += 1
        return aborted

    def delete(self, bucket: str, key: str) -> None:
        """Delete one object; deleting a missing key succeeds (as in S3)."""
        keys.check_key(key)
        with _translated("delete", bucket, key):
            self._client.delete_object(Bucket=bucket, Key=key)

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        keys.check_prefix(prefix)
        deleted = 0
        with _translated("delete_prefix", bucket):
            paginator = self._client.get_paginator("list_objects_v2")
            batch: list[dict[str, str]] = []
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    batch.append({"Key": item["Key"]})
                    if len(batch) == _DELETE_BATCH:
                        deleted += self._delete_batch(bucket, batch)
                        batch = []
            if batch:
                deleted += self._delete_batch(bucket, batch)
        return deleted

    def _delete_batch(self, bucket: str, batch: list[dict[str, str]]) -> int:
        response = self._client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        errors = response.get("Errors", [])
        if errors:
            codes = sorted({str(e.get("Code")) for e in errors})
            transient = any(code in _TRANSIENT_CODES for code in codes)
            raise StorageError(
                f"s3 delete_prefix {bucket}: {len(errors)} of {len(batch)} keys not deleted ({codes})",
                transient=transient,
            )
        return len(batch)

    # -- reads ----------------------------------------------------------------------------

    def head(self, bucket: str, key: str) -> StoredObject:
        """Size, content type and sha256 metadata of one object (raises ObjectNotFound)."""
        keys.check_key(key)
        with _translated("head", bucket, key):
            response = self._client.head_object(Bucket=bucket, Key=key)
            # Empty for an original streamed as a multipart upload: its metadata was fixed by
            # CreateMultipartUpload, before the whole file's hash was known (the DB row has it).
            sha256 = str(response.get("Metadata", {}).get("sha256", ""))
        return StoredObject(
            key=key,
            size=int(response["ContentLength"]),
            content_type=str(response.get("ContentType", "application/octet-stream")),
            sha256=sha256,
        )

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        """Every key under ``prefix`` (``{tenant}/`` or ``{tenant}/{upload_id}/``), sorted."""
        keys.check_prefix(prefix)
        found: list[str] = []
        with _translated("list_keys", bucket):
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                found.extend(str(item["Key"]) for item in page.get("Contents", []))
        return sorted(found)

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.head(bucket, key)
        except ObjectNotFound:
            return False
        return True

    def get_bytes(self, bucket: str, key: str) -> bytes:
        keys.check_key(key)
        with _translated("get_bytes", bucket, key):
            body = self._client.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
        return data

    def download_file(self, bucket: str, key: str, path: Path) -> None:
        """Download to ``path``; s3transfer writes a temporary file and renames it when whole."""
        keys.check_key(key)
        with _translated("download_file", bucket, key):
            self._client.download_file(bucket, key, str(path), Config=self._transfer)

    def presign_get(self, bucket: str, key: str, *, ttl_seconds: int) -> str:
        """A SigV4 presigned GET URL; the signature covers bucket, key, expiry and the
        ``response-content-disposition`` override (``base.content_disposition``), so the
        download-not-render answer can't be edited out of the URL."""
        keys.check_key(key)
        if ttl_seconds < 1 or ttl_seconds > 7 * 24 * 3600:
            raise ValueError("ttl_seconds must be between 1 s and 7 days (the SigV4 maximum)")
        with _translated("presign_get", bucket, key):
            url: str = self._presigner.generate_presigned_url(
                "get_object",
                Params={"Bucket": bucket, "Key": key, "ResponseContentDisposition": content_disposition(key)},
                ExpiresIn=ttl_seconds,
            )
        return url

    # -- buckets and health ---------------------------------------------------------------

    def allow_browser_gets(self, origins: list[str], *, max_age_seconds: int = 600) -> None:
        """Let pages of ``origins`` ``fetch()`` artifacts through presigned URLs (the artifacts
        bucket's CORS: GET and HEAD only; no origins removes it). An ``<img>`` needs none of
        this; a page reading the bytes (canvas, fetch) does. For local and dev stacks: in
        production the bucket's owner sets its CORS."""
        bucket = self._settings.artifacts_bucket
        with _translated("put_bucket_cors", bucket, ignore_codes={"NoSuchCORSConfiguration"}):
            if not origins:
                self._client.delete_bucket_cors(Bucket=bucket)
                return
            rule = {
                "AllowedOrigins": list(origins),
                "AllowedMethods": ["GET", "HEAD"],
                "AllowedHeaders": ["*"],
                "ExposeHeaders": ["ETag", "Content-Length", "Content-Type"],
                "MaxAgeSeconds": max_age_seconds,
            }
            self._client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule]})

    def ensure_buckets(self) -> None:
        """Create both buckets unless they exist; HEAD first, so that pre-provisioned buckets
        need no CreateBucket permission."""
        for bucket in (self._settings.originals_bucket, self._settings.artifacts_bucket):
            if self._bucket_exists(bucket):
                continue
            args: dict[str, Any] = {"Bucket": bucket}
            if self._settings.region != "us-east-1":
                args["CreateBucketConfiguration"] = {"LocationConstraint": self._settings.region}
            # BucketAlreadyOwnedByYou: another process of ours created it meanwhile.
            with _translated("create_bucket", bucket, ignore_codes={"BucketAlreadyOwnedByYou"}):
                self._client.create_bucket(**args)

    def drop_buckets(self) -> None:
        """Empty and delete both buckets. For tests and throw-away dev stacks only (the
        service never calls it); missing buckets are fine."""
        for bucket in (self._settings.originals_bucket, self._settings.artifacts_bucket):
            if not self._bucket_exists(bucket):
                continue
            with _translated("drop_buckets", bucket, ignore_codes={"NoSuchBucket"}):
                paginator = self._client.get_paginator("list_objects_v2")
                for page in paginator.paginate(Bucket=bucket):
                    batch = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                    if batch:
                        self._delete_batch(bucket, batch)
                self._client.delete_bucket(Bucket=bucket)

    def _bucket_exists(self, bucket: str) -> bool:
        try:
            self._client.head_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as exc:
            if _status(exc) == 404 or _code(exc) == "NoSuchBucket":
                return False
            raise _translate(exc, op="head_bucket", bucket=bucket, key=None) from exc
        except (botocore.exceptions.BotoCoreError, *_TRANSFER_ERRORS) as exc:
            raise _translate(exc, op="head_bucket", bucket=bucket, key=None) from exc
        return True

    def ping(self) -> None:
        """Raise StorageError unless the originals bucket answers an authenticated HEAD."""
        with _translated("ping", self._settings.originals_bucket):
            self._client.head_bucket(Bucket=self._settings.originals_bucket)


class _StreamedPart:
    """One part of a streamed original: its bytes fill ``buffer`` as they arrive while a thread
    sends them (``chunks``), ``CHUNK_BYTES`` at a time. The bytes stay until S3 acknowledged
    the part, so a failed attempt is retried from them, and a part the body ended in (the last,
    shorter than its declared size) is sent again from them, with its real size."""

    def __init__(self, number: int, size: int, changed: threading.Condition, writer: S3StreamingWriter) -> None:
        self.number = number
        self.size = size
        # An anonymous mapping, not a bytearray: it goes back to the OS the moment the part is
        # dropped (malloc would keep a freed 8 MiB block in its heap and let the process grow).
        self.buffer = mmap.mmap(-1, size)
        self.filled = 0
        #: Bytes handed to the connection by the furthest attempt (what the reader's lead counts).
        self.sent = 0
        self.ended = False  # no more bytes will come (the body ended, or the writer aborted)
        self.aborted = False
        self.sha256 = b""
        self._changed = changed
        self._writer = writer

    @property
    def full(self) -> bool:
        return self.filled == self.size

    def fill(self, data: memoryview) -> int:
        """Copy as much of ``data`` as fits (the caller holds ``changed``); returns how much."""
        n = min(len(data), self.size - self.filled)
        self.buffer[self.filled : self.filled + n] = data[:n]
        self.filled += n
        return n

    def chunks(self) -> Iterator[memoryview]:
        """The part's bytes as they arrive (raises TruncatedBody if the body ends first)."""
        digest = hashlib.sha256()
        view = memoryview(self.buffer)
        for start in range(0, self.size, CHUNK_BYTES):
            end = min(start + CHUNK_BYTES, self.size)
            with self._changed:
                stalled = time.monotonic() + _STALL_SECONDS
                while self.filled < end and not self.ended:
                    if not self._changed.wait(timeout=max(0.0, stalled - time.monotonic())):
                        self.aborted = True  # the writer was left without commit or abort
                        break
                if self.filled < end:
                    raise TruncatedBody(self.number)
            chunk = view[start:end]
            digest.update(chunk)
            yield chunk
            with self._changed:
                if end > self.sent:
                    self._writer._handed += end - self.sent
                    self.sent = end
                    self._changed.notify_all()
        self.sha256 = digest.digest()


class S3StreamingWriter:
    """An object sent to S3 while its bytes arrive (``ObjectWriter``).

    Up to one part is held in memory; a body that never grows past it goes out as one
    ``PutObject`` at ``commit`` (signed with the whole file's sha256 and carrying it as
    ``x-amz-checksum-sha256``, which the server verifies; sent by ``DirectS3``). The first byte
    past one part starts a multipart upload: the first part goes out from memory, and every
    later part is *streamed*: an ``UploadPart`` (of a size ``_plan_part`` chooses: 5 MiB, or cut
    to ``size_hint``) starts with its first byte and sends its bytes while they arrive, so the reader runs at most ``_LEAD_BYTES`` ahead of
    what went to S3 (``congested()`` until ``wait()`` has let it catch up), and at most
    ``in_flight`` parts are unacknowledged at once. A streamed part's SHA-256 goes in the
    trailer of its ``aws-chunked`` body, and the server verifies it (SeaweedFS answers
    ``InvalidDigest`` to a wrong one, and checks the parts' checksums again at
    ``CompleteMultipartUpload``). The part the body ends in is shorter than it declared: that
    request is dropped and the part sent again from memory with its real size and a
    header checksum. Such an object has no ``x-amz-meta-sha256``: its metadata is fixed when
    the upload starts, before the whole file's hash is known (the upload's DB row holds it).
    ``commit`` finishes the last part and sends ``CompleteMultipartUpload``; ``abort`` (or a
    failed commit) aborts the multipart upload, so nothing is left in the bucket.

    Memory: at most ``in_flight`` + 1 parts (the first, then the streamed ones not yet
    acknowledged; a planned part is at most max(``part_bytes``, 10 MiB)), whatever the file size.

    Not thread-safe: one reader calls ``write``/``wait``/``commit``/``abort`` in turn.
    """

    def __init__(
        self,
        client: Any,
        direct: DirectS3,
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
        self._executor = executor
        self.bucket, self.key, self.content_type = bucket, key, content_type
        self._part_bytes = part_bytes
        self._in_flight = in_flight
        self._buffer = bytearray()
        #: CreateMultipartUpload, sent from a thread too (its parts wait for it there).
        self._created: concurrent.futures.Future[str] | None = None
        self._pending: list[concurrent.futures.Future[dict[str, Any]]] = []
        self._done: list[dict[str, Any]] = []
        self._next_part = 1
        self._current: _StreamedPart | None = None
        #: Bytes past a full part while ``in_flight`` parts are unacknowledged (a chunk at most).
        self._overflow = bytearray()
        self._size_hint = size_hint
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
                with _translated("put_object", self.bucket, self.key):
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
                with _translated("complete_multipart_upload", self.bucket, self.key):
                    self._client.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=self.key,
                        UploadId=self._created.result(),
                        MultipartUpload={"Parts": parts},
                    )
        except BaseException:
            with contextlib.suppress(StorageError):  # (retried in the background if S3 is down)
                self.abort()
            # A PUT or Complete whose answer was lost may have stored the object all the same:
            # the key is this upload's alone, so deleting it is always safe.
            with contextlib.suppress(botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, StorageError):
                self._client.delete_object(Bucket=self.bucket, Key=self.key)
            raise
        self._finished = True
        self._buffer = bytearray()
        return StoredObject(key=self.key, size=self.size, content_type=self.content_type, sha256=sha256)

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
        with _translated("abort_multipart_upload", self.bucket, self.key, ignore_codes={"NoSuchUpload"}):
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
                    size = self._plan_part(self._planned)
                    self._planned += size
                    self._current = _StreamedPart(number, size, self._changed, self)
                    self._submit(self._upload_streamed, self._current)
                n = self._current.fill(data)
                self._streamed += n
                self._changed.notify_all()
            data = data[n:]

    def _plan_part(self, start: int) -> int:
        """The declared size of the streamed part that starts at byte ``start``.

        Without ``size_hint``: S3's smallest part, 5 MiB (or ``part_bytes`` if smaller): the part
        the body ends in is sent again with its real size at ``commit``, and the smallest part
        bounds what goes out twice (2.5 MiB on average instead of 4 at 8 MiB parts). With it (the body's size, or an upper bound: a multipart
        form's request length), the parts are cut so that the body's end falls on a part
        boundary: the last planned part ends ``_HINT_SLACK`` before the bound, and what comes
        after it (the form's closing boundary, its later fields, or up to ``_HINT_SLACK`` bytes
        of the file) is a small last part. Every part but the last stays >= 5 MiB.
        """
        left = None if self._size_hint is None else self._size_hint - start - _HINT_SLACK
        if left is None or left + _HINT_SLACK <= 0:
            # No hint, or the body went past it: parts as small as S3 allows.
            return min(self._part_bytes, _MIN_PART_BYTES)
        if left >= self._part_bytes + _MIN_PART_BYTES:
            return self._part_bytes
        if left > self._part_bytes:
            # Two parts left: keep the next one >= 5 MiB (or take all, up to 2 x 5 MiB).
            return left - _MIN_PART_BYTES if left >= 2 * _MIN_PART_BYTES else left
        if left >= _MIN_PART_BYTES:
            return left
        # Less than 5 MiB left: a part that may not be the last would be too small, so this one
        # runs to the bound (if the body ends before it, it is sent again, as without a hint).
        return max(1, left + _HINT_SLACK)

    def _end_current(self, *, abort: bool) -> None:
        """No more bytes: the part being filled ends here (shorter than declared)."""
        with self._changed:
            if self._current is not None:
                self._current.ended = True
                self._current.aborted = abort
                self._changed.notify_all()
            self._current = None

    def _submit(self, job: Any, arg: Any) -> None:
        if self._created is None:  # (never: the first part creates the upload)
            raise RuntimeError("no multipart upload")
        future = self._executor.submit(job, self._created, arg)
        future.add_done_callback(self._notify)
        self._pending.append(future)

    def _notify(self, _future: object) -> None:
        with self._changed:
            self._changed.notify_all()

    def _create(self) -> str:
        with _translated("create_multipart_upload", self.bucket, self.key):
            response = self._client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self.content_type, ChecksumAlgorithm="SHA256"
            )
        return str(response["UploadId"])

    def _upload_first(self, created: concurrent.futures.Future[str], part: bytearray) -> dict[str, Any]:
        return self._upload_from_memory(created.result(), 1, memoryview(part))

    def _upload_from_memory(self, upload_id: str, number: int, body: memoryview) -> dict[str, Any]:
        digest = hashlib.sha256(body).digest()
        with _translated("upload_part", self.bucket, self.key):
            etag = self._direct.upload_part(self.bucket, self.key, upload_id, number, body, sha256=digest)
        return {"PartNumber": number, "ETag": etag, "ChecksumSHA256": base64.b64encode(digest).decode("ascii")}

    def _upload_streamed(self, created: concurrent.futures.Future[str], part: _StreamedPart) -> dict[str, Any]:
        upload_id = created.result()  # raises the creation's StorageError
        try:
            if part.aborted:
                raise TruncatedBody(part.number)
            with _translated("upload_part", self.bucket, self.key):
                etag = self._direct.upload_part_streamed(
                    self.bucket, self.key, upload_id, part.number, part.size, part.chunks, lambda: part.sha256
                )
        except TruncatedBody:
            if part.aborted:
                raise StorageError(f"s3 upload_part {self.bucket}/{self.key}: aborted", transient=False) from None
            # The body ended inside this part: it is the last one, sent again with its real size.
            return self._upload_from_memory(upload_id, part.number, memoryview(part.buffer)[: part.filled])
        return {"PartNumber": part.number, "ETag": etag, "ChecksumSHA256": base64.b64encode(part.sha256).decode("ascii")}

    def _reap(self, *, block: bool) -> None:
        """Collect finished parts (waiting for the oldest when ``block``); a failed part raises."""
        if not self._pending:
            return
        if block:
            concurrent.futures.wait(self._pending, return_when=concurrent.futures.FIRST_COMPLETED)
        still: list[concurrent.futures.Future[dict[str, Any]]] = []
        for future in self._pending:
            if future.done():
                self._done.append(future.result())  # raises the part's StorageError
            else:
                still.append(future)
        self._pending = still
