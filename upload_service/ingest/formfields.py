"""Form fields besides ``file`` and ``metadata`` become metadata keys (Uppy's XHRUpload sends each
meta field as its own form part). Pure: bytes in, a dict out, or ``422 VALIDATION_FAILED``.

Bounds: the number of fields is bounded by ``limits.max_multipart_parts`` (past it the reader
answers ``400 MALFORMED_MULTIPART``); a field name is 1-64 characters, a value at most
``MAX_FORM_VALUE_BYTES`` of UTF-8; the merged metadata serializes to at most
``limits.max_field_bytes``. Keys of the ``metadata`` JSON win over fields of the same name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from upload_service.errors import ErrorCode, ServiceError

#: The fields that are not metadata keys.
RESERVED_FIELDS = frozenset({"file", "metadata"})
MAX_FORM_VALUE_BYTES = 4096
MAX_FORM_NAME_CHARS = 64


def metadata_with_fields(
    metadata: dict[str, Any] | None, fields: Mapping[str, bytes], *, max_metadata_bytes: int
) -> dict[str, Any] | None:
    """``metadata`` plus every other text field as a string value (``metadata`` wins)."""
    extra: dict[str, Any] = {}
    for name, raw in fields.items():
        if name in RESERVED_FIELDS:
            continue
        if not 0 < len(name) <= MAX_FORM_NAME_CHARS or not name.isprintable():
            raise _invalid(name[:MAX_FORM_NAME_CHARS], f"a field name is 1 to {MAX_FORM_NAME_CHARS} printable characters")
        if len(raw) > MAX_FORM_VALUE_BYTES:
            raise _invalid(name, f"a form field's value is at most {MAX_FORM_VALUE_BYTES} bytes")
        try:
            extra[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _invalid(name, "a form field's value must be UTF-8 text") from None
    if not extra:
        return metadata
    merged = {**extra, **(metadata or {})}
    if len(json.dumps(merged, separators=(",", ":")).encode()) > max_metadata_bytes:
        raise _invalid("metadata", f"metadata and form fields together exceed {max_metadata_bytes} bytes")
    return merged


def _invalid(name: str, message: str) -> ServiceError:
    return ServiceError(
        ErrorCode.VALIDATION_FAILED, message, details=[{"loc": ["body", name], "msg": message}]
    )
