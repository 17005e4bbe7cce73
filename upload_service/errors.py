"""The one error contract: every code the API may answer with, its HTTP status, and ServiceError.

No framework imports here: any layer raises ``ServiceError(ErrorCode.X, "public message")`` and
only the API's exception handlers turn it into a response body. The public message never carries
paths, keys or stack traces; ``internal`` is for the log only.
"""

from __future__ import annotations

import enum
from typing import Any


class ErrorCode(str, enum.Enum):
    """The SPEC's list of error codes; each member knows its HTTP status."""

    BAD_REQUEST = "BAD_REQUEST"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    NO_FIELDS = "NO_FIELDS"
    MALFORMED_MULTIPART = "MALFORMED_MULTIPART"
    MISSING_FILE = "MISSING_FILE"
    TOO_MANY_FILES = "TOO_MANY_FILES"
    EMPTY_FILE = "EMPTY_FILE"
    FILE_TOO_LARGE = "FILE_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    CONTENT_TYPE_MISMATCH = "CONTENT_TYPE_MISMATCH"
    EXTENSION_MISMATCH = "EXTENSION_MISMATCH"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    RATE_LIMITED = "RATE_LIMITED"
    HEADERS_TOO_LARGE = "HEADERS_TOO_LARGE"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    INSUFFICIENT_STORAGE = "INSUFFICIENT_STORAGE"
    DEPENDENCY_UNAVAILABLE = "DEPENDENCY_UNAVAILABLE"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    INTERNAL = "INTERNAL"

    @property
    def status(self) -> int:
        return _STATUS[self]


_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.NO_FIELDS: 400,
    ErrorCode.MALFORMED_MULTIPART: 400,
    ErrorCode.MISSING_FILE: 400,
    ErrorCode.TOO_MANY_FILES: 400,
    ErrorCode.EMPTY_FILE: 400,
    ErrorCode.FILE_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.CONTENT_TYPE_MISMATCH: 415,
    ErrorCode.EXTENSION_MISMATCH: 415,
    ErrorCode.VALIDATION_FAILED: 422,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.HEADERS_TOO_LARGE: 431,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.INSUFFICIENT_STORAGE: 507,
    ErrorCode.DEPENDENCY_UNAVAILABLE: 503,
    ErrorCode.UPSTREAM_UNAVAILABLE: 502,
    ErrorCode.INTERNAL: 500,
}


class ServiceError(Exception):
    """A failure with a machine code, a public message and optional public details.

    ``internal`` is logged, never sent. ``headers`` are extra response headers (``Retry-After``).
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        details: Any = None,
        internal: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.details = details
        self.internal = internal
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return self.code.status


class StorageError(Exception):
    """An object store failure, already translated from the backend's SDK.

    ``transient`` says whether retrying later may succeed (network, 5xx, throttling).
    """

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class ObjectNotFound(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"object not found: {key}", transient=False)
        self.key = key
