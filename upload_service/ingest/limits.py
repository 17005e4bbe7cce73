"""Size limits applied before and while the body is read."""

from __future__ import annotations

from upload_service.errors import ErrorCode, ServiceError
from upload_service.ingest.sniff import UNKNOWN_DECLARED, normalize_media_type
from upload_service.settings import LimitSettings


def upfront_limit(limits: LimitSettings, *, declared_type: str | None, raw_body: bool) -> int:
    """The most bytes a request body may carry, known before reading any of it.

    A raw body declares its own type, so that type's limit applies at once; a multipart body
    (or an unknown declared type) is held to the body cap until the file's type is detected.
    """
    declared = normalize_media_type(declared_type)
    if raw_body and declared not in UNKNOWN_DECLARED and declared in limits.allowed_types:
        return limits.limit_for(declared)
    return limits.max_body_bytes


def check_content_length(header: str | None, limit: int) -> int | None:
    """Refuse a declared length over ``limit`` before any body byte is read.

    Returns the declared length, or ``None`` for a chunked body (counted while streaming).
    """
    if header is None:
        return None
    try:
        length = int(header)
    except ValueError:
        raise ServiceError(ErrorCode.BAD_REQUEST, "Content-Length is not a number") from None
    if length < 0:
        raise ServiceError(ErrorCode.BAD_REQUEST, "Content-Length is negative")
    if length > limit:
        raise too_large(limit)
    return length


def too_large(limit: int) -> ServiceError:
    return ServiceError(
        ErrorCode.FILE_TOO_LARGE,
        f"the upload exceeds the limit of {limit} bytes",
        details={"limit_bytes": limit},
    )
