"""``manifest.json``: the list consumers read to find every artifact of an upload.

Every terminal outcome writes one, so a consumer watching the ``manifest.json`` suffix (an S3
event notification) learns of every upload that will not change any more:

- ``done``: written last, after every artifact, so its presence means they are complete;
- ``failed``: the error's code and message, and no artifacts.

The format is documented for consumers in docs/artifacts.md and as a JSON Schema in
docs/manifest.schema.json; ``MANIFEST_VERSION`` changes only with them (new fields may be
added within a version).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class StoredArtifact:
    name: str
    key: str
    size: int
    type: str
    sha256: str


def build_manifest(
    *,
    upload_id: str,
    tenant: str,
    source_sha256: str,
    source_type: str,
    artifacts: list[StoredArtifact],
    info: dict[str, Any],
    created_at: datetime | None = None,
) -> bytes:
    """The manifest of a ``done`` upload: every artifact (but itself), sorted by name."""
    return _serialize(
        _document(upload_id, tenant, source_sha256, source_type, created_at)
        | {"status": "done", "error": None, "artifacts": [asdict(a) for a in sorted(artifacts, key=lambda a: a.name)],
           "info": info}
    )


def build_failed_manifest(
    *,
    upload_id: str,
    tenant: str,
    source_sha256: str,
    source_type: str,
    error_code: str,
    error_message: str,
    created_at: datetime | None = None,
) -> bytes:
    """The manifest of a ``failed`` upload: the error the API shows, no artifacts, empty info."""
    return _serialize(
        _document(upload_id, tenant, source_sha256, source_type, created_at)
        | {"status": "failed", "error": {"code": error_code, "message": error_message}, "artifacts": [], "info": {}}
    )


def _document(
    upload_id: str, tenant: str, source_sha256: str, source_type: str, created_at: datetime | None
) -> dict[str, Any]:
    return {
        "version": MANIFEST_VERSION,
        "upload_id": upload_id,
        "tenant": tenant,
        "source": {"sha256": source_sha256, "type": source_type},
        "created_at": (created_at or datetime.now(timezone.utc)).isoformat(),
    }


def _serialize(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
