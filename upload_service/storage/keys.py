"""The ONE object key layout, as pure functions.

Originals live at ``{tenant}/{upload_id}/original`` in the originals bucket; artifacts at
``{tenant}/{upload_id}/{name}`` in the artifacts bucket, so one upload is one prefix in each
bucket and deleting an upload is a prefix delete. Consumers of the artifacts bucket rely on this
layout (docs/artifacts.md), so it is built here and nowhere else.

Every part is checked against a closed pattern (lower-case letters, digits, ``_`` and ``-``;
names may also hold dots but never ``..``). No client-supplied string ever becomes a key
unchecked, so a key can never be an absolute path, climb out of its prefix (``..``) or smuggle
separators, which is what lets the local backend map keys to files safely.
"""

from __future__ import annotations

import re

#: Tenant ids and upload ids: lower-case so keys are case-stable on every filesystem.
_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
#: Artifact names (``thumb-256.webp``, ``manifest.json``).
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: RFC 7230 token characters plus ``/``, ``;``, ``=``, space and quotes for parameters.
_CONTENT_TYPE_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+/[A-Za-z0-9!#$%&'*+.^_`|~-]+(;[ -~]*)?")

#: The name of the original inside an upload's prefix (originals bucket).
ORIGINAL_NAME = "original"


def _check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or _ID_RE.fullmatch(value) is None:
        raise ValueError(f"invalid {kind}: must match {_ID_RE.pattern}")
    return value


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid artifact name, else raise ValueError."""
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None or ".." in name:
        raise ValueError(f"invalid object name: must match {_NAME_RE.pattern} without '..'")
    return name


def upload_prefix(tenant: str, upload_id: str) -> str:
    """``{tenant}/{upload_id}/``: everything stored for one upload, in either bucket."""
    return f"{_check_id('tenant', tenant)}/{_check_id('upload id', upload_id)}/"


def original_key(tenant: str, upload_id: str) -> str:
    """Key of the uploaded bytes in the originals bucket."""
    return upload_prefix(tenant, upload_id) + ORIGINAL_NAME


def artifact_key(tenant: str, upload_id: str, name: str) -> str:
    """Key of one processing result in the artifacts bucket."""
    return upload_prefix(tenant, upload_id) + check_name(name)


def check_key(key: str) -> str:
    """Return ``key`` if it has the layout's shape (``a/b/name``), else raise ValueError.

    Backends call this on every key they are handed, so a key built anywhere but here is
    refused the same way by every backend.
    """
    parts = key.split("/") if isinstance(key, str) else []
    if len(parts) != 3:
        raise ValueError("invalid key: expected '{tenant}/{upload_id}/{name}'")
    _check_id("tenant", parts[0])
    _check_id("upload id", parts[1])
    check_name(parts[2])
    return key


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is ``{tenant}/`` or ``{tenant}/{upload_id}/``, else raise.

    An empty prefix, or one without the trailing ``/`` (``t/u1`` also matches ``t/u10/...``),
    would delete more than asked, so prefix deletes only accept whole path segments.
    """
    if not isinstance(prefix, str) or not prefix.endswith("/"):
        raise ValueError("invalid prefix: must be '{tenant}/' or '{tenant}/{upload_id}/'")
    parts = prefix[:-1].split("/")
    if len(parts) not in (1, 2):
        raise ValueError("invalid prefix: must be '{tenant}/' or '{tenant}/{upload_id}/'")
    _check_id("tenant", parts[0])
    if len(parts) == 2:
        _check_id("upload id", parts[1])
    return prefix


def check_sha256(sha256: str) -> str:
    """Return ``sha256`` if it is 64 lower-case hex digits (it becomes object metadata)."""
    if not isinstance(sha256, str) or _SHA256_RE.fullmatch(sha256) is None:
        raise ValueError("invalid sha256: expected 64 lower-case hex digits")
    return sha256


def check_content_type(content_type: str) -> str:
    """Return ``content_type`` if it is a printable ``type/subtype`` (it becomes a header)."""
    if not isinstance(content_type, str) or len(content_type) > 255 or _CONTENT_TYPE_RE.fullmatch(content_type) is None:
        raise ValueError("invalid content type")
    return content_type
