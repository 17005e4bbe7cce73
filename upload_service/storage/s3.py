"""The S3 backend's object store. With ``s3_writer.py`` (the streaming writer of originals),
``s3_direct.py`` (the accept path's signed requests), ``s3_loop.py`` (a whole original's PUT
from the event loop) and ``s3_errors.py`` (SDK errors to ``StorageError``), the only modules
that import boto3/botocore (and s3transfer, urllib3).

It works against AWS S3 and S3-compatible servers (SeaweedFS, MinIO). Every SDK failure leaves
the backend as a ``StorageError`` (``s3_errors.py``): network faults, timeouts, 5xx and
throttling are transient; a missing key is ``ObjectNotFound``; 403 and other 4xx are permanent.

Integrity: the sha256 computed at ingest is stored as ``x-amz-meta-sha256`` for consumers, and
also sent as an S3 checksum so that the server verifies the bytes it received: single-request
puts carry the precomputed ``ChecksumSHA256`` (a mismatch is refused with ``BadDigest``);
multipart puts of files (``put_file``: workers' artifacts) use ``ChecksumAlgorithm=SHA256``
(per-part checksums that boto3 computes, verified per part); the accept path's streamed
originals carry per-part CRC32Cs instead (``s3_direct.py`` says why).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import boto3.exceptions
import botocore.exceptions
import botocore.session
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from upload_service.errors import ObjectNotFound, StorageError
from upload_service.settings import StorageSettings
from upload_service.storage import keys
from upload_service.storage.base import StoredObject, content_disposition
from upload_service.storage.s3_direct import DirectS3
from upload_service.storage.s3_loop import LoopPuts
from upload_service.storage.s3_errors import (
    TRANSFER_ERRORS, TRANSIENT_CODES, b64_sha256, error_code, http_status, translate, translated,
)
from upload_service.storage.s3_writer import S3StreamingWriter

#: S3 deletes at most this many keys per DeleteObjects request.
_DELETE_BATCH = 1000
#: ``drop_buckets`` empties a bucket at most this many times, pausing between passes.
DROP_PASSES = 5
DROP_PAUSE_SECONDS = 0.5
#: Threads that send the parts of streamed originals (shared by all uploads of a process; each
#: upload has at most ``multipart_parts_in_flight`` parts among them). A part holds its thread
#: while its bytes arrive (streamed) or until it is full (plain), so this bounds the large
#: uploads that stream at once; the pool only starts threads as they are needed.
_PART_THREADS = 64
log = logging.getLogger(__name__)


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
        self._loop_puts = LoopPuts(self._direct, settings)
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
            extra["ChecksumSHA256"] = b64_sha256(sha256)  # one PUT: the server checks our hash
        else:
            extra["ChecksumAlgorithm"] = "SHA256"  # multipart: per-part SHA-256 checksums
        with translated("put_file", bucket, key):
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
        with translated("put_bytes", bucket, key):
            self._client.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                Metadata={"sha256": sha256},
                ChecksumSHA256=b64_sha256(sha256),
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
            self._loop_puts,
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
        with translated("abort_stale_writes", bucket):
            now = time.time()
            for page in self._client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
                for upload in page.get("Uploads", []):
                    initiated = upload.get("Initiated")
                    if initiated is None or now - initiated.timestamp() < older_than_seconds:
                        continue
                    with translated("abort_multipart_upload", bucket, str(upload["Key"]), ignore_codes={"NoSuchUpload"}):
                        self._client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    aborted += 1
        return aborted

    def delete(self, bucket: str, key: str) -> None:
        """Delete one object; deleting a missing key succeeds (as in S3)."""
        keys.check_key(key)
        with translated("delete", bucket, key):
            self._client.delete_object(Bucket=bucket, Key=key)

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        keys.check_prefix(prefix)
        with translated("delete_prefix", bucket):
            return self._delete_listed(bucket, prefix)

    def _delete_listed(self, bucket: str, prefix: str = "") -> int:
        """Delete every key under ``prefix`` ("": the whole bucket), ``_DELETE_BATCH`` at a time."""
        deleted = 0
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
            transient = any(code in TRANSIENT_CODES for code in codes)
            raise StorageError(
                f"s3 delete_prefix {bucket}: {len(errors)} of {len(batch)} keys not deleted ({codes})",
                transient=transient,
            )
        return len(batch)

    # -- reads ----------------------------------------------------------------------------

    def head(self, bucket: str, key: str) -> StoredObject:
        """Size, content type and sha256 metadata of one object (raises ObjectNotFound)."""
        keys.check_key(key)
        with translated("head", bucket, key):
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
        with translated("list_keys", bucket):
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
        with translated("get_bytes", bucket, key):
            body = self._client.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
        return data

    def download_file(self, bucket: str, key: str, path: Path) -> None:
        """Download to ``path``; s3transfer writes a temporary file and renames it when whole."""
        keys.check_key(key)
        with translated("download_file", bucket, key):
            self._client.download_file(bucket, key, str(path), Config=self._transfer)

    def presign_get(self, bucket: str, key: str, *, ttl_seconds: int) -> str:
        """A SigV4 presigned GET URL; the signature covers bucket, key, expiry and the
        ``response-content-disposition`` override (``base.content_disposition``), so the
        download-not-render answer can't be edited out of the URL."""
        keys.check_key(key)
        if ttl_seconds < 1 or ttl_seconds > 7 * 24 * 3600:
            raise ValueError("ttl_seconds must be between 1 s and 7 days (the SigV4 maximum)")
        with translated("presign_get", bucket, key):
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
        with translated("put_bucket_cors", bucket, ignore_codes={"NoSuchCORSConfiguration"}):
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
            with translated("create_bucket", bucket, ignore_codes={"BucketAlreadyOwnedByYou"}):
                self._client.create_bucket(**args)

    def drop_buckets(self) -> None:
        """Empty and delete both buckets. For tests and throw-away dev stacks only (the
        service never calls it); missing buckets are fine. An object that lands after the
        listing (a request the server had taken in before a pause, say, and stores only now)
        makes the bucket's delete fail: it is emptied again, up to ``DROP_PASSES`` times."""
        for bucket in (self._settings.originals_bucket, self._settings.artifacts_bucket):
            if not self._bucket_exists(bucket):
                continue
            for attempt in range(DROP_PASSES):
                with translated("drop_buckets", bucket, ignore_codes={"NoSuchBucket"}):
                    if not self._empty_and_delete(bucket, last=attempt == DROP_PASSES - 1):
                        time.sleep(DROP_PAUSE_SECONDS)
                        continue
                break  # dropped, or gone meanwhile (NoSuchBucket)

    def _empty_and_delete(self, bucket: str, *, last: bool) -> bool:
        """False if an object landed after the listing (``BucketNotEmpty``), unless ``last``."""
        self._delete_listed(bucket)
        try:
            self._client.delete_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as exc:
            if last or error_code(exc) != "BucketNotEmpty":
                raise
            return False
        return True

    def _bucket_exists(self, bucket: str) -> bool:
        try:
            self._client.head_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as exc:
            if http_status(exc) == 404 or error_code(exc) == "NoSuchBucket":
                return False
            raise translate(exc, op="head_bucket", bucket=bucket, key=None) from exc
        except (botocore.exceptions.BotoCoreError, *TRANSFER_ERRORS) as exc:
            raise translate(exc, op="head_bucket", bucket=bucket, key=None) from exc
        return True

    async def aclose(self) -> None:
        await self._loop_puts.aclose()

    def ping(self) -> None:
        """Raise StorageError unless the originals bucket answers an authenticated HEAD."""
        with translated("ping", self._settings.originals_bucket):
            self._client.head_bucket(Bucket=self._settings.originals_bucket)
