"""AWS Signature Version 4 for the accept path's S3 requests, with the signing key kept per day.

botocore's ``S3SigV4Auth`` builds each signature through its general request machinery (an
``AWSRequest``, ``email.message`` headers, URL re-parsing, four HMACs to derive the day's key):
~45 µs of CPU per request (8 % of the event loop's on-CPU samples under the small-upload bench).
These requests are few and fixed (``PutObject``, ``UploadPart``: a path-style or virtual-host
URL, a handful of headers, the payload hash given by the caller), so the signature is computed
here from the same canonical request, and the key derived from the secret and the day is kept
until the day or the credentials change.

The output is byte-for-byte botocore's (``tests/unit/test_sigv4.py`` signs generated requests
both ways and compares every header): the same headers are signed (all but botocore's
unsigned list, plus ``host``), values trimmed the same way, S3's path taken as it is (S3 does
not normalize it), the query string sorted as botocore sorts it.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

#: Never signed (botocore's ``SIGNED_HEADERS_BLACKLIST``): proxies and clients may change them.
UNSIGNED_HEADERS = frozenset(
    {
        "baggage", "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "traceparent", "tracestate", "trailer", "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id",
    }
)
#: Set by the signer (a value passed in is replaced, as botocore replaces it on a retry).
_SIGNER_HEADERS = frozenset({"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Credentials(Protocol):
    """botocore's frozen credentials (``ReadOnlyCredentials``) have these three fields."""

    access_key: str
    secret_key: str
    token: str | None


class SigV4Signer:
    """Signs requests to one region's S3 (thread-safe; one per ``DirectS3``)."""

    def __init__(self, region: str, service: str = "s3") -> None:
        self._region = region
        self._service = service
        self._lock = threading.Lock()
        self._key: tuple[str, str, bytes] | None = None  # (secret, day, signing key)

    def sign(
        self,
        credentials: Credentials,
        method: str,
        url: str,
        headers: Mapping[str, str],
        payload_sha256: str,
        *,
        at: float | None = None,
    ) -> dict[str, str]:
        """``headers`` plus ``X-Amz-Date``, ``X-Amz-Security-Token`` (temporary credentials),
        ``X-Amz-Content-SHA256`` (= ``payload_sha256``) and ``Authorization``; ``at`` is the
        signing time (seconds since the epoch; now when None)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(at))
        day = stamp[:8]
        signed = {name: value for name, value in headers.items() if name.lower() not in _SIGNER_HEADERS}
        signed["X-Amz-Date"] = stamp
        if credentials.token:
            signed["X-Amz-Security-Token"] = credentials.token
        signed["X-Amz-Content-SHA256"] = payload_sha256

        parts = urlsplit(url)
        canonical: dict[str, str] = {}
        for name, value in signed.items():
            lowered = name.lower()
            if lowered in UNSIGNED_HEADERS:
                continue
            trimmed = " ".join(value.split())
            canonical[lowered] = f"{canonical[lowered]},{trimmed}" if lowered in canonical else trimmed
        canonical.setdefault("host", host_header(parts))
        names = sorted(canonical)
        signed_names = ";".join(names)
        request = "\n".join(
            (
                method.upper(),
                parts.path,
                _canonical_query(parts.query),
                "".join(f"{name}:{canonical[name]}\n" for name in names),
                signed_names,
                payload_sha256,
            )
        )
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(request.encode('utf-8')).hexdigest()}"
        signature = hmac.new(self._signing_key(credentials.secret_key, day), to_sign.encode("utf-8"), hashlib.sha256)
        signed["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature.hexdigest()}"
        )
        return signed

    def _signing_key(self, secret: str, day: str) -> bytes:
        with self._lock:
            kept = self._key
        if kept is not None and kept[0] == secret and kept[1] == day:
            return kept[2]
        key = f"AWS4{secret}".encode()
        for part in (day, self._region, self._service, "aws4_request"):
            key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
        with self._lock:
            self._key = (secret, day, key)
        return key


def host_header(parts: SplitResult) -> str:
    """The ``host`` header botocore signs: the lowercase host, IPv6 in brackets, the port unless
    it is the scheme's default, no user info."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def _canonical_query(query: str) -> str:
    """The URL's (already encoded) parameters sorted by name, then value."""
    if not query:
        return ""
    pairs = sorted(pair.partition("=")[::2] for pair in query.split("&"))
    return "&".join(f"{name}={value}" for name, value in pairs)
