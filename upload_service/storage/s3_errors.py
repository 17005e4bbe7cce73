"""How the S3 backend's SDK failures become ``StorageError``: network faults, timeouts, 5xx and
throttling are transient (retrying later may help); a missing key is ``ObjectNotFound``; 403 and
other 4xx are permanent. Messages carry the operation, bucket, key, error code and HTTP status,
never credentials. Also how a checksum is written for S3 (``checksum_text``), shared by both senders."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator

import boto3
import boto3.exceptions
import botocore.exceptions
import botocore.session
import s3transfer.exceptions

from upload_service.errors import ObjectNotFound, StorageError

#: Error codes that mean "slow down / try again", whatever their HTTP status.
TRANSIENT_CODES = frozenset(
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
TRANSFER_ERRORS: tuple[type[Exception], ...] = (
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

def error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: botocore.exceptions.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def translate(exc: BaseException, *, op: str, bucket: str, key: str | None) -> StorageError:
    """Map one boto3/botocore exception (or a wrapper around one) to a StorageError."""
    where = f"s3 {op} {bucket}/{key}" if key is not None else f"s3 {op} {bucket}"
    if isinstance(exc, botocore.exceptions.ClientError):
        code, status = error_code(exc), http_status(exc)
        if code == "NoSuchBucket" or (status == 404 and key is None):
            return StorageError(f"{where}: bucket does not exist ({code or status})", transient=False)
        if key is not None and (code in _NOT_FOUND_CODES or status == 404):
            return ObjectNotFound(key)
        transient = status >= 500 or status in (408, 429) or code in TRANSIENT_CODES
        return StorageError(f"{where}: {code or 'error'} (HTTP {status})", transient=transient)
    if isinstance(exc, (botocore.exceptions.HTTPClientError, botocore.exceptions.ConnectionError)):
        # Connection refused/reset/closed, connect and read timeouts, broken response streams.
        return StorageError(f"{where}: endpoint unavailable ({type(exc).__name__})", transient=True)
    if isinstance(exc, (botocore.exceptions.ChecksumError, botocore.exceptions.IncompleteReadError)):
        return StorageError(f"{where}: corrupted transfer ({type(exc).__name__})", transient=True)
    if isinstance(exc, TRANSFER_ERRORS):
        # boto3/s3transfer wrappers (S3UploadFailedError, RetriesExceededError, ...) carry the
        # real error as ``last_exception`` or as the chained exception; their own text repeats
        # the local file name, so it is not used.
        inner = getattr(exc, "last_exception", None) or exc.__cause__ or exc.__context__
        if isinstance(inner, BaseException) and inner is not exc:
            return translate(inner, op=op, bucket=bucket, key=key)
        # Retries used up, or the object changed size/ETag while being downloaded.
        transient = isinstance(exc, _TRANSIENT_TRANSFER_ERRORS)
        return StorageError(f"{where}: transfer failed ({type(exc).__name__})", transient=transient)
    # Missing/partial credentials, parameter validation, configuration: retrying won't help.
    return StorageError(f"{where}: {type(exc).__name__}", transient=False)


@contextlib.contextmanager
def translated(
    op: str, bucket: str, key: str | None = None, *, ignore_codes: frozenset[str] | set[str] = frozenset()
) -> Iterator[None]:
    """Run the block, turning SDK exceptions into StorageError; ``ignore_codes`` are S3 error
    codes that mean the goal is already reached (they end the block silently)."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in ignore_codes:
            return
        raise translate(exc, op=op, bucket=bucket, key=key) from exc
    except (botocore.exceptions.BotoCoreError, *TRANSFER_ERRORS) as exc:
        raise translate(exc, op=op, bucket=bucket, key=key) from exc


def checksum_text(digest: bytes) -> str:
    """A checksum as S3's headers, trailers and ``CompleteMultipartUpload`` carry it (base64)."""
    return base64.b64encode(digest).decode("ascii")


def b64_sha256(sha256: str) -> str:
    """A hex sha256 as S3's ``ChecksumSHA256`` carries it."""
    return checksum_text(bytes.fromhex(sha256))
