"""Type detection from magic bytes, and the checks of the declared type and extension against it.

Order (docs/errors.md): detected type not allowed → UNSUPPORTED_MEDIA_TYPE; declared type
disagrees → CONTENT_TYPE_MISMATCH; extension disagrees → EXTENSION_MISMATCH.
"""

from __future__ import annotations

import threading
from collections.abc import Collection

import magic

from upload_service.errors import ErrorCode, ServiceError

#: Declared types that mean "I don't know": the detected type decides.
UNKNOWN_DECLARED = frozenset({"", "application/octet-stream", "binary/octet-stream"})

#: Non-canonical names clients send for the types we accept.
TYPE_ALIASES: dict[str, str] = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/jpe": "image/jpeg",
    "image/x-png": "image/png",
    "image/x-citrix-png": "image/png",
    "image/x-webp": "image/webp",
    "application/x-pdf": "application/pdf",
    "application/acrobat": "application/pdf",
}

#: Filename extensions each accepted type may carry (lower case, without the dot).
EXTENSIONS: dict[str, frozenset[str]] = {
    "image/png": frozenset({"png"}),
    "image/jpeg": frozenset({"jpg", "jpeg", "jpe", "jfif", "pjpeg", "pjp"}),
    "image/gif": frozenset({"gif"}),
    "image/webp": frozenset({"webp"}),
    "application/pdf": frozenset({"pdf"}),
}


def normalize_media_type(value: str | None) -> str:
    """``"Image/JPG; charset=x"`` → ``"image/jpeg"``; ``None`` → ``""``."""
    if not value:
        return ""
    base = value.split(";", 1)[0].strip().lower()
    return TYPE_ALIASES.get(base, base)


class TypeSniffer:
    """Detects a media type from the first bytes of a file with libmagic.

    One ``magic.Magic`` instance is reused; it serializes calls with its own lock, which is what
    makes it safe under threads (the module-level compat helpers are not).
    """

    def __init__(self) -> None:
        self._magic = magic.Magic(mime=True)
        self._lock = threading.Lock()

    def detect_type(self, head: bytes) -> str:
        with self._lock:
            return normalize_media_type(self._magic.from_buffer(head))


def check_type(detected: str, declared: str | None, filename: str | None, allowed: Collection[str]) -> None:
    """Raise the 415 codes in their documented order (docs/errors.md), or return when all three agree."""
    if detected not in allowed:
        raise ServiceError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"files of type {detected or 'unknown'} are not accepted",
            details={"detected_type": detected, "allowed_types": sorted(allowed)},
        )
    declared_type = normalize_media_type(declared)
    if declared_type not in UNKNOWN_DECLARED and declared_type != detected:
        raise ServiceError(
            ErrorCode.CONTENT_TYPE_MISMATCH,
            f"the declared type {declared_type} does not match the content ({detected})",
            details={"declared_type": declared_type, "detected_type": detected},
        )
    extension = extension_of(filename)
    if extension and extension not in EXTENSIONS.get(detected, frozenset()):
        raise ServiceError(
            ErrorCode.EXTENSION_MISMATCH,
            f"the extension .{extension} does not match the content ({detected})",
            details={"extension": extension, "detected_type": detected},
        )


def extension_of(filename: str | None) -> str:
    """The lower-cased extension of a filename, or ``""`` when it has none."""
    if not filename:
        return ""
    stem, dot, extension = filename.rpartition(".")
    if not dot or not stem.strip("."):
        return ""
    return extension.lower()
