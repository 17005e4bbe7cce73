"""The one error contract: every code the API may answer with, its HTTP status, and ServiceError.

No framework imports here: any layer raises ``ServiceError(ErrorCode.X, "public message")`` and
only the API's exception handlers turn it into a response body. The public message never carries
paths, keys or stack traces; ``internal`` is for the log only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class ErrorCode(str, enum.Enum):
    """The API's error codes (docs/errors.md); each member knows its HTTP status."""

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

    @property
    def statuses(self) -> tuple[int, ...]:
        """Every status answered with this code: its own, and any nginx answers it with too."""
        return (self.status, *_ALSO_ANSWERED_WITH.get(self, ()))

    @property
    def doc(self) -> ErrorDoc:
        """When the code is answered and what a client should do (docs/errors.md, OpenAPI)."""
        return _DOCS[self]


@dataclass(frozen=True)
class ErrorDoc:
    """A code's documentation: when it happens, what a client should do about it."""

    when: str
    client_action: str


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

#: nginx's 504 (the API did not answer in time) carries UPSTREAM_UNAVAILABLE too.
_ALSO_ANSWERED_WITH: dict[ErrorCode, tuple[int, ...]] = {ErrorCode.UPSTREAM_UNAVAILABLE: (504,)}

_RETRY = "Retry later with backoff (honour `Retry-After` when present); the upload was not stored."
_FIX = "Do not retry unchanged: fix the request."

_DOCS: dict[ErrorCode, ErrorDoc] = {
    ErrorCode.BAD_REQUEST: ErrorDoc(
        "The request is malformed: an unparseable request line or header (nginx), an invalid "
        "`Content-Length` or `Idempotency-Key`, a body that ended before it was complete, an invalid "
        "audit query (`limit`, `cursor`, `action`, time bounds without a timezone), a `cursor` of "
        "`GET /v1/uploads` that is damaged or was made for other filters.",
        _FIX + " A body cut short by a network fault may be retried as is, with the same `Idempotency-Key`.",
    ),
    ErrorCode.UNAUTHENTICATED: ErrorDoc(
        "No `Authorization: Bearer` credential, or an unknown, revoked, expired or malformed API key or upload token.",
        "Send a valid key or mint a new upload token; do not retry with the same credential.",
    ),
    ErrorCode.FORBIDDEN: ErrorDoc(
        "The credential is valid but lacks the scope this route needs (`upload`, `read`, `admin`), or an "
        "upload token was used beyond what it allows (another upload's record, more uploads than `max_uploads`).",
        "Use a key with the needed scope, or a fresh upload token.",
    ),
    ErrorCode.NOT_FOUND: ErrorDoc(
        "No such route, upload, artifact or tenant for this caller (another tenant's uploads are "
        "not found, never forbidden); a deleted upload; on nginx's public listener, an internal path.",
        "Check the id; an upload being deleted or already deleted stays 404.",
    ),
    ErrorCode.METHOD_NOT_ALLOWED: ErrorDoc(
        "The route exists but not with this HTTP method.",
        _FIX,
    ),
    ErrorCode.REQUEST_TIMEOUT: ErrorDoc(
        "The body did not arrive in time (the app's own read deadline; nginx closes a slow "
        "connection without answering).",
        "Retry on a better connection; keep the same `Idempotency-Key` so a retry can't create a second upload.",
    ),
    ErrorCode.NO_FIELDS: ErrorDoc(
        "A `PATCH` names none of `filename`, `metadata`, `tags`.",
        _FIX,
    ),
    ErrorCode.MALFORMED_MULTIPART: ErrorDoc(
        "The `multipart/form-data` body can't be parsed: no or a bad boundary, part headers over the "
        "limit, too long a preamble, a truncated body.",
        "Fix the client's multipart encoding (let the HTTP library build it).",
    ),
    ErrorCode.MISSING_FILE: ErrorDoc(
        "The multipart body has no part named `file`, or the file part has another name.",
        "Send the file in a part named `file`.",
    ),
    ErrorCode.TOO_MANY_FILES: ErrorDoc(
        "More than one file part, or more parts than `limits.max_multipart_parts`.",
        "Send one file per request.",
    ),
    ErrorCode.EMPTY_FILE: ErrorDoc(
        "The file has zero bytes.",
        _FIX,
    ),
    ErrorCode.FILE_TOO_LARGE: ErrorDoc(
        "The body exceeds the cap (nginx, `limits.max_body_bytes`; on other routes "
        "`nginx.max_json_body_bytes`) or the file exceeds its detected type's limit (the app). "
        "`details.limit_bytes` is the limit that applied.",
        "Do not retry: compress or resize below `details.limit_bytes`.",
    ),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: ErrorDoc(
        "The file's magic bytes are not an allowed type (`limits.allowed_types`; PNG, JPEG, GIF, WebP, "
        "PDF by default), or an upload token narrows the types. `details.detected_type` says what was seen.",
        "Send an allowed type; renaming a file does not change its type.",
    ),
    ErrorCode.CONTENT_TYPE_MISMATCH: ErrorDoc(
        "The declared `Content-Type` of the file (part) disagrees with its magic bytes.",
        "Declare the real type, or omit it.",
    ),
    ErrorCode.EXTENSION_MISMATCH: ErrorDoc(
        "The filename's extension disagrees with the detected type (`photo.pdf` holding a PNG).",
        "Use the extension of the real type, or none.",
    ),
    ErrorCode.VALIDATION_FAILED: ErrorDoc(
        "A parameter or JSON body is invalid: wrong type or range, unknown field, too deep or too "
        "large a JSON value, a filename with no usable characters, too many tags. `details` lists "
        "each problem as `{loc, msg, type}`.",
        _FIX + " `details[].loc` names the field.",
    ),
    ErrorCode.RATE_LIMITED: ErrorDoc(
        "Too many requests or connections from this client address (nginx `limit_req`/`limit_conn`).",
        "Slow down; retry after a pause with exponential backoff and jitter.",
    ),
    ErrorCode.HEADERS_TOO_LARGE: ErrorDoc(
        "The request line or a header line is over nginx's buffer (8 KiB by default), or all headers together are.",
        "Send shorter headers (cookies, tokens) and a shorter URL.",
    ),
    ErrorCode.IDEMPOTENCY_CONFLICT: ErrorDoc(
        "The `Idempotency-Key` was already used with a different body, or by another client, or "
        "the first request with it is still in progress.",
        "Use a new key for a new upload; a retry of the same upload must send the same bytes.",
    ),
    ErrorCode.INSUFFICIENT_STORAGE: ErrorDoc(
        "This API node's spool is below `spool.min_free_bytes`; checked before the body is read.",
        _RETRY,
    ),
    ErrorCode.DEPENDENCY_UNAVAILABLE: ErrorDoc(
        "The database or object store is not answering, or a queue is deeper than "
        "`admission.max_queue_depth` (load shedding); checked before the body is read where possible.",
        _RETRY,
    ),
    ErrorCode.UPSTREAM_UNAVAILABLE: ErrorDoc(
        "nginx could not reach an API node (502) or the API did not answer within "
        "`nginx.proxy_read_timeout_seconds` (504).",
        _RETRY + " After a 504 on an upload, retry with the same `Idempotency-Key`: it may have been stored.",
    ),
    ErrorCode.INTERNAL: ErrorDoc(
        "An unexpected error; the details are in the server log under the response's request id.",
        "Retry later; if it persists, report the `X-Request-ID`.",
    ),
}

#: Codes an upload record's ``error.code`` may carry once processing failed (``status: failed``).
#: Workers raise them by name; a test keeps this table and the workers' codes equal.
PROCESSING_CODES: dict[str, ErrorDoc] = {
    "IMAGE_FORMAT_NOT_ALLOWED": ErrorDoc(
        "The decoder found an image format outside the allow-list (the header passed, the body is something else).",
        "Upload a PNG, JPEG, GIF or WebP.",
    ),
    "IMAGE_CORRUPT": ErrorDoc("The image is corrupt, truncated or zero-sized.", "Re-export the image and upload it again."),
    "IMAGE_TOO_MANY_PIXELS": ErrorDoc(
        "Width × height (× frames) exceeds `processing.max_pixels` (decompression-bomb guard).",
        "Resize the image and upload it again.",
    ),
    "IMAGE_TOO_MANY_FRAMES": ErrorDoc("An animation has more than `processing.max_frames` frames.", "Shorten the animation."),
    "IMAGE_TOO_COMPLEX": ErrorDoc(
        "Decoding needs more work than allowed (too many progressive scans, chunks or blocks).",
        "Re-encode the image (baseline JPEG, plain PNG).",
    ),
    "PDF_ENCRYPTED": ErrorDoc("The PDF is password-protected.", "Upload an unencrypted PDF."),
    "PDF_CORRUPT": ErrorDoc("The PDF is damaged beyond repair.", "Re-export the PDF and upload it again."),
    "PDF_TOO_MANY_PAGES": ErrorDoc("The PDF has more than `processing.max_pdf_pages` pages.", "Split the document."),
    "PROCESSING_TIMEOUT": ErrorDoc(
        "Processing took longer than the job's deadline, on every attempt.", "Upload a smaller or simpler file."
    ),
    "PROCESSING_MEMORY_EXCEEDED": ErrorDoc(
        "Processing needed more memory than a job may use.", "Upload a smaller or simpler file."
    ),
    "PROCESSING_CRASHED": ErrorDoc(
        "The worker died while processing this file `queue.max_crashes` times.",
        "Do not upload the same file again; report the upload id.",
    ),
    "PROCESSING_UNAVAILABLE": ErrorDoc(
        "Storage or the database stayed unavailable through every retry of the job.",
        "Upload the file again later.",
    ),
}


def render_error_docs() -> str:
    """docs/errors.md, generated from the tables above (``python -m upload_service.errors``)."""
    lines = [
        "# Error codes",
        "",
        "<!-- Generated by `python -m upload_service.errors > docs/errors.md` from",
        "     upload_service/errors.py; a test fails when this file is stale. Do not edit. -->",
        "",
        "Every error answer has the same body, whichever layer (nginx or the app) produced it:",
        "",
        "```json",
        '{"error": {"code": "FILE_TOO_LARGE", "message": "…", "request_id": "…", "details": {"limit_bytes": 20971520}}}',
        "```",
        "",
        "`request_id` equals the `X-Request-ID` response header. `message` is for people and may",
        "change; act on `code`. Statuses `429`, `503`, `507` (and `502`/`504` from nginx) are",
        "transient; the others are not and a retry of the same request gets the same answer.",
        "",
        "## HTTP error codes",
        "",
        "| code | status | when | what a client should do |",
        "|---|---|---|---|",
    ]
    for code in ErrorCode:
        status = ", ".join(str(value) for value in code.statuses)
        lines.append(f"| `{code.value}` | {status} | {code.doc.when} | {code.doc.client_action} |")
    lines += [
        "",
        "## Processing error codes",
        "",
        "An upload accepted with `202` can still end `failed`; its record's `error.code` then says why",
        "(`GET /v1/uploads/{id}`). `UNSUPPORTED_MEDIA_TYPE` may also appear there.",
        "",
        "| code | when | what a client should do |",
        "|---|---|---|",
    ]
    for name, doc in PROCESSING_CODES.items():
        lines.append(f"| `{name}` | {doc.when} | {doc.client_action} |")
    return "\n".join(lines) + "\n"


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


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_error_docs())
