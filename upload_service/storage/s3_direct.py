"""The accept path's hot S3 requests, sent without boto3's per-call machinery.

boto3's ``put_object`` spends ~2 ms of client CPU per call on a 20 KiB–100 KB body (parameter
validation, serialization, a dozen event hooks, checksum handlers, the retry handler), more
than half of the API's whole budget for a small upload. The requests here are built once
and signed with SigV4 as botocore signs them (``sigv4.py``: the same bytes, the day's key kept),
then sent over a urllib3 connection pool (the HTTP library botocore itself uses): ~0.8–0.9 ms
per PUT on the same server (docs/architecture.md, "Object storage"). Only the requests of the accept path go this way —
``PutObject`` of an original up to one part and ``UploadPart`` of a streamed original —
everything else stays with boto3 (``s3.py``).

The API sends a whole original (up to one part) from its event loop instead (``s3_loop.py``),
with this module's URL, signature, retry policy and errors.

What boto3 would do and this module does too:
- the URL is the one boto3's endpoint rules give for the bucket (path or virtual-host style,
  as ``addressing_style`` says; AWS regional endpoints when no ``endpoint_url`` is set): it
  is taken once per bucket from the boto3 client;
- credentials are the boto3 session's (explicit keys, or the default chain with refreshing
  role credentials), frozen once per request;
- TLS certificates are verified against the bundle botocore uses (``AWS_CA_BUNDLE`` or
  certifi's);
- connect and read timeouts from ``StorageSettings``; retries like botocore's ``standard``
  mode (up to ``max_attempts`` in all, full-jitter exponential backoff capped at 20 s) for
  connection errors, 500/502/503/504 and throttling codes — the requests are idempotent;
- failures are raised as botocore's own exceptions (``ClientError`` with the S3 error code
  and HTTP status, ``EndpointConnectionError``, ``ReadTimeoutError``, ...), so ``s3.py``
  translates them into ``StorageError`` exactly as it does boto3's.

Integrity: a whole original's ``PutObject`` carries the sha256 the ingest computed (no second
hash of the body on our side) as ``x-amz-checksum-sha256``, a signed header: the server
recomputes it and refuses a mismatch (``BadDigest``). Its SigV4 payload hash is
``UNSIGNED-PAYLOAD``: the checksum header already binds the body to the signature, and a signed
payload hash cost SeaweedFS ~0.2 ms more per 100 KB ``PUT`` without being checked by it (a
wrong one was accepted; docs/architecture.md). A part of a multipart
upload carries a CRC32C instead (``x-amz-checksum-crc32c``, the payload ``UNSIGNED-PAYLOAD``),
which the server recomputes and checks the same way: the whole file's sha256 can't be checked
part by part, and a part's own SHA-256 would be a second hash pass over every byte, on our side
and on the server's (``part_checksum``: ~0.06 ms/MiB against SHA-256's ~0.85). A streamed
part's CRC32C is only known once its last byte has gone out, so it travels in the trailer of an
``aws-chunked`` body (``STREAMING-UNSIGNED-PAYLOAD-TRAILER``). The file's sha256 stays the
upload's record; workers check the original against it before processing.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import botocore.credentials
import botocore.exceptions
import crc32c
import urllib3

from upload_service.settings import StorageSettings
from upload_service.storage.s3_errors import b64_sha256, checksum_text
from upload_service.storage.sigv4 import Credentials, SigV4Signer

#: botocore's standard retry mode: these codes and statuses are worth another attempt.
_RETRY_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "InternalError",
    }
)
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
#: What an attempt raises that ``retry_pause`` judges (both senders, threads and event loop).
ATTEMPT_ERRORS = (
    botocore.exceptions.ClientError, botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError
)
#: botocore's standard mode caps one backoff pause at 20 s.
_MAX_BACKOFF_SECONDS = 20.0
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,128})</Code>")
_ERROR_MESSAGE = re.compile(rb"<Message>([^<]{0,512})</Message>")
#: Payload hash of a body framed as ``aws-chunked`` with an unsigned checksum trailer.
STREAMING_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
#: Payload hash of a part whose integrity its checksum header carries.
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
#: The checksum of a multipart upload's parts (``ChecksumAlgorithm`` at its creation).
PART_CHECKSUM_ALGORITHM = "CRC32C"
_PART_CHECKSUM_HEADER = "x-amz-checksum-crc32c"
#: A streamed part goes out in ``aws-chunked`` chunks of this size (the last one may be shorter).
CHUNK_BYTES = 256 * 1024


class TruncatedBody(Exception):
    """A streamed body ended before its declared length (the upload's last part was shorter)."""


def chunked_length(size: int, chunk: int = CHUNK_BYTES) -> int:
    """The length of ``size`` bytes framed as ``aws-chunked`` with a CRC32C trailer."""
    full, rest = divmod(size, chunk)
    length = full * (len(f"{chunk:x}") + 4 + chunk)
    if rest:
        length += len(f"{rest:x}") + 4 + rest
    trailer = len(_PART_CHECKSUM_HEADER) + 1 + 8 + 2  # ":", base64 of 4 bytes, then CRLF
    return length + len(b"0\r\n") + trailer + 2


class PartChecksum:
    """A part's CRC32C, fed as its bytes go out (``update``); ``digest()`` is what S3 lists."""

    def __init__(self, data: bytes | bytearray | memoryview = b"") -> None:
        self._value = crc32c.crc32c(data)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._value = crc32c.crc32c(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


def part_checksum(data: bytes | bytearray | memoryview) -> bytes:
    """The checksum S3 checks a part against (CRC32C, 4 bytes big-endian)."""
    return PartChecksum(data).digest()


class DirectS3:
    """Signed ``PutObject``/``UploadPart`` requests over one connection pool (thread-safe)."""

    def __init__(self, settings: StorageSettings, client: Any, session: Any) -> None:
        self._client = client
        self._session = session  # botocore session: credentials and the CA bundle
        self._signer = SigV4Signer(client.meta.region_name)
        self._max_attempts = settings.max_attempts
        self._explicit: Credentials | None = None
        if settings.access_key_id is not None and settings.secret_access_key is not None:
            self._explicit = botocore.credentials.Credentials(
                settings.access_key_id.get_secret_value(), settings.secret_access_key.get_secret_value()
            ).get_frozen_credentials()
        #: The CA bundle botocore verifies TLS against (``s3_loop`` uses it too).
        self.ca_bundle: str = session.get_config_variable("ca_bundle") or _default_ca_bundle()
        self.https = str(client.meta.endpoint_url).startswith("https:")
        self._pool = urllib3.PoolManager(
            num_pools=8,
            maxsize=32,
            retries=False,
            timeout=urllib3.Timeout(connect=settings.connect_timeout_seconds, read=settings.read_timeout_seconds),
            cert_reqs="CERT_REQUIRED",
            ca_certs=self.ca_bundle,
        )
        self._bases: dict[str, str] = {}
        self._bases_lock = threading.Lock()

    def url(self, bucket: str, key: str) -> str:
        """The object's URL, as boto3 addresses it (keys are ``[a-z0-9._/-]``, checked by the
        store; quoted all the same)."""
        base = self._bases.get(bucket)
        if base is None:
            # The URL boto3 would send a PutObject of this bucket to (its endpoint rules:
            # addressing style, region, custom endpoint); the key is its path's last part.
            probe = "k"
            signed = self._client.generate_presigned_url(
                "put_object", Params={"Bucket": bucket, "Key": probe}, ExpiresIn=60
            )
            base = signed.split("?", 1)[0][: -len(probe)]
            with self._bases_lock:
                self._bases[bucket] = base
        return base + quote(key, safe="/~")

    def put_object(
        self, bucket: str, key: str, body: bytes | bytearray | memoryview, *, content_type: str, sha256: str
    ) -> None:
        """One ``PutObject`` whose bytes the server checks against ``sha256`` (hex)."""
        headers = put_headers(len(body), content_type, sha256)
        self._send("PutObject", "PUT", self.url(bucket, key), headers, lambda: body, payload_sha256=UNSIGNED_PAYLOAD)

    def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        body: bytes | bytearray | memoryview,
        *,
        checksum: bytes,
    ) -> str:
        """One ``UploadPart`` of bytes in memory, checked against ``checksum`` (``part_checksum``);
        returns the part's ETag."""
        headers = {"Content-Length": str(len(body)), _PART_CHECKSUM_HEADER: checksum_text(checksum)}
        url = self._part_url(bucket, key, upload_id, number)
        response = self._send("UploadPart", "PUT", url, headers, lambda: body, payload_sha256=UNSIGNED_PAYLOAD)
        return str(response.headers.get("ETag", ""))

    def upload_part_streamed(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        size: int,
        chunks: Callable[[], Iterable[bytes | memoryview]],
        checksum: Callable[[], bytes],
    ) -> str:
        """One ``UploadPart`` of ``size`` bytes sent while ``chunks()`` yields them (an attempt
        that fails is retried with a fresh ``chunks()``); ``checksum()``, called once they are
        all out, gives their ``part_checksum`` for the trailer. Returns the part's ETag."""
        headers = {
            "Content-Length": str(chunked_length(size)),
            "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(size),
            "x-amz-trailer": _PART_CHECKSUM_HEADER,
            "x-amz-sdk-checksum-algorithm": PART_CHECKSUM_ALGORITHM,
        }

        def framed() -> Iterator[bytes | memoryview]:
            for piece in _rechunk(chunks(), CHUNK_BYTES):
                yield b"%x\r\n" % len(piece)
                yield piece
                yield b"\r\n"
            yield f"0\r\n{_PART_CHECKSUM_HEADER}:{checksum_text(checksum())}\r\n\r\n".encode("ascii")

        url = self._part_url(bucket, key, upload_id, number)
        response = self._send("UploadPart", "PUT", url, headers, framed, payload_sha256=STREAMING_TRAILER)
        return str(response.headers.get("ETag", ""))

    def _part_url(self, bucket: str, key: str, upload_id: str, number: int) -> str:
        return f"{self.url(bucket, key)}?partNumber={number}&uploadId={quote(upload_id, safe='')}"

    def _send(
        self,
        operation: str,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Callable[[], Any],
        *,
        payload_sha256: str,
    ) -> urllib3.BaseHTTPResponse:
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt(operation, method, url, headers, body(), payload_sha256)
            except ATTEMPT_ERRORS as exc:
                pause = self.retry_pause(exc, attempt)
                if pause is None:
                    raise
            time.sleep(pause)

    def retry_pause(self, error: Exception, attempt: int) -> float | None:
        """How long to wait before another attempt after ``error`` (botocore's standard mode:
        connection errors, 5xx and throttling, full-jitter backoff), or None to give up."""
        if attempt >= self._max_attempts:
            return None
        if isinstance(error, botocore.exceptions.ClientError):
            status = int(error.response["ResponseMetadata"]["HTTPStatusCode"])
            if status not in _RETRY_STATUSES and error.response["Error"]["Code"] not in _RETRY_CODES:
                return None
        # Full jitter, as botocore's standard mode: rand(0, 1) * 2 ** (attempt - 1) seconds.
        return min(_MAX_BACKOFF_SECONDS, random.random() * 2 ** (attempt - 1))

    def signed_headers(self, method: str, url: str, headers: Mapping[str, str], payload_sha256: str) -> dict[str, str]:
        """``headers`` with the SigV4 ones added (a fresh signature per attempt), the payload
        hash given as ``payload_sha256`` (``UNSIGNED-PAYLOAD`` or the streaming trailer's: the
        body is never hashed here; its checksum header is what the server checks)."""
        return self._signer.sign(self._credentials(), method, url, headers, payload_sha256)

    def _attempt(
        self, operation: str, method: str, url: str, headers: dict[str, str], body: Any, payload_sha256: str
    ) -> urllib3.BaseHTTPResponse:
        signed = self.signed_headers(method, url, headers, payload_sha256)
        try:
            response = self._pool.urlopen(method, url, body=body, headers=signed, redirect=False, preload_content=True)
        except TruncatedBody:
            raise
        except urllib3.exceptions.SSLError as exc:
            raise botocore.exceptions.SSLError(endpoint_url=url.split("?", 1)[0], error=exc) from exc
        except urllib3.exceptions.NewConnectionError as exc:  # (a ConnectTimeoutError too: first)
            raise botocore.exceptions.EndpointConnectionError(endpoint_url=url.split("?", 1)[0], error=exc) from exc
        except urllib3.exceptions.ConnectTimeoutError as exc:
            raise botocore.exceptions.ConnectTimeoutError(endpoint_url=url.split("?", 1)[0], error=exc) from exc
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise botocore.exceptions.ReadTimeoutError(endpoint_url=url.split("?", 1)[0], error=exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # Reset, closed or broken connections (also a body that could not be sent).
            raise botocore.exceptions.ConnectionClosedError(endpoint_url=url.split("?", 1)[0], error=exc) from exc
        if response.status >= 300:
            raise client_error(operation, response.status, response.data or b"", response.headers)
        return response

    def _credentials(self) -> Credentials:
        """The explicit keys, or the session chain's (refreshed role credentials) frozen now."""
        if self._explicit is not None:
            return self._explicit
        found = self._session.get_credentials()
        if found is None:
            raise botocore.exceptions.NoCredentialsError()
        return found.get_frozen_credentials()  # type: ignore[no-any-return]


def put_headers(size: int, content_type: str, sha256: str) -> dict[str, str]:
    """A ``PutObject``'s headers: the server checks the bytes against ``sha256`` (hex)."""
    return {
        "Content-Type": content_type,
        "Content-Length": str(size),
        "x-amz-meta-sha256": sha256,
        "x-amz-checksum-sha256": b64_sha256(sha256),
    }


def client_error(
    operation: str, status: int, data: bytes, headers: Mapping[str, str]
) -> botocore.exceptions.ClientError:
    """The ``ClientError`` botocore would raise for this error response."""
    code_match, message_match = _ERROR_CODE.search(data), _ERROR_MESSAGE.search(data)
    code = code_match.group(1).decode("utf-8", "replace") if code_match else str(status)
    message = message_match.group(1).decode("utf-8", "replace") if message_match else ""
    return botocore.exceptions.ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": dict(headers)},
        },
        operation,
    )


def _rechunk(pieces: Iterable[bytes | memoryview], size: int) -> Iterator[bytes | memoryview]:
    """The bytes of ``pieces`` again, in pieces of exactly ``size`` (the last one shorter)."""
    pending = bytearray()
    for piece in pieces:
        if not pending and len(piece) == size:
            yield piece
            continue
        pending += piece
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)


def _default_ca_bundle() -> str:
    from botocore.httpsession import get_cert_path

    return str(get_cert_path(True))
