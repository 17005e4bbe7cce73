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
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import boto3.exceptions
import botocore.exceptions
import s3transfer.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from upload_service.errors import ObjectNotFound, StorageError
from upload_service.settings import StorageSettings
from upload_service.storage import keys
from upload_service.storage.base import StoredObject, content_disposition

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
#: upload has at most ``multipart_parts_in_flight`` parts among them).
_PART_THREADS = 8
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
        session = boto3.session.Session()
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

    def open_writer(self, bucket: str, key: str, *, content_type: str) -> S3StreamingWriter:
        keys.check_key(key)
        keys.check_content_type(content_type)
        with self._executor_lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(_PART_THREADS, thread_name_prefix="s3-part")
        return S3StreamingWriter(
            self._client,
            self._executor,
            bucket,
            key,
            content_type=content_type,
            part_bytes=self._settings.multipart_part_bytes,
            in_flight=self._settings.multipart_parts_in_flight,
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


class S3StreamingWriter:
    """An object sent to S3 while its bytes arrive (``ObjectWriter``).

    Up to one part is held in memory; a body that never grows past it goes out as one
    ``PutObject`` at ``commit`` (carrying the whole file's sha256 as ``x-amz-checksum-sha256``,
    which the server verifies). The first byte past one part starts a multipart upload and each
    full part is sent from a thread while the next one fills, at most ``in_flight`` at a time
    (``congested()`` tells the reader to ``wait()``); every part carries its own SHA-256
    checksum, which the server verifies (SeaweedFS answers ``BadDigest`` to a wrong one, and
    checks the parts' checksums again at ``CompleteMultipartUpload``). Such an object has no
    ``x-amz-meta-sha256``: its metadata is fixed when the upload starts, before the whole file's
    hash is known (the upload's DB row holds it). ``commit`` sends the last part and
    ``CompleteMultipartUpload``; ``abort`` (or a failed commit) aborts the multipart upload, so
    nothing is left in the bucket.

    Not thread-safe: one reader calls ``write``/``wait``/``commit``/``abort`` in turn.
    """

    def __init__(
        self,
        client: Any,
        executor: concurrent.futures.Executor,
        bucket: str,
        key: str,
        *,
        content_type: str,
        part_bytes: int,
        in_flight: int,
    ) -> None:
        self._client = client
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
        self.size = 0
        self._finished = False

    @property
    def multipart(self) -> bool:
        return self._created is not None

    def write(self, data: bytes | memoryview) -> None:
        if self._finished:
            raise RuntimeError("the writer is closed")
        self._reap(block=False)
        self._buffer += data
        self.size += len(data)
        # A part leaves only once more bytes follow it: a body of exactly one part stays one PUT.
        while len(self._buffer) > self._part_bytes:
            part, self._buffer = self._buffer, bytearray(memoryview(self._buffer)[self._part_bytes :])
            del part[self._part_bytes :]
            self._send(part)

    def congested(self) -> bool:
        return len(self._pending) >= self._in_flight

    def wait(self) -> None:
        """Block until fewer than ``in_flight`` parts are being sent (raises a part's error)."""
        while self.congested():
            self._reap(block=True)

    def commit(self, sha256: str) -> StoredObject:
        keys.check_sha256(sha256)
        if self._finished:
            raise RuntimeError("the writer is closed")
        try:
            if self._created is None:
                with _translated("put_object", self.bucket, self.key):
                    self._client.put_object(
                        Bucket=self.bucket,
                        Key=self.key,
                        Body=self._buffer,
                        ContentType=self.content_type,
                        Metadata={"sha256": sha256},
                        ChecksumSHA256=_b64_sha256(sha256),
                    )
            else:
                if self._buffer:
                    last, self._buffer = self._buffer, bytearray()
                    self._send(last)
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
        """Forget everything: wait for parts being sent, then abort the multipart upload."""
        if self._finished:
            return
        self._finished = True
        self._buffer = bytearray()
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

    def _send(self, part: bytearray) -> None:
        """Queue one part; the first also queues CreateMultipartUpload (before it: the pool runs
        jobs in order, so a part never waits on a creation stuck behind it)."""
        if self._created is None:
            self._created = self._executor.submit(self._create)
        number = self._next_part
        self._next_part += 1
        self._pending.append(self._executor.submit(self._upload_part, self._created, number, part))

    def _create(self) -> str:
        with _translated("create_multipart_upload", self.bucket, self.key):
            response = self._client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self.content_type, ChecksumAlgorithm="SHA256"
            )
        return str(response["UploadId"])

    def _upload_part(
        self, created: concurrent.futures.Future[str], number: int, part: bytearray
    ) -> dict[str, Any]:
        upload_id = created.result()  # raises the creation's StorageError
        checksum = base64.b64encode(hashlib.sha256(part).digest()).decode("ascii")
        with _translated("upload_part", self.bucket, self.key):
            response = self._client.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=upload_id,
                PartNumber=number,
                Body=part,
                ChecksumSHA256=checksum,
            )
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

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
