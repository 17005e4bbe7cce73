"""``manifest.json``: the list consumers read to find every artifact of an upload.

Written last, so its presence means the upload's artifacts are complete. The format is
documented for consumers in docs/artifacts.md; ``MANIFEST_VERSION`` changes only with it.
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
    document = {
        "version": MANIFEST_VERSION,
        "upload_id": upload_id,
        "tenant": tenant,
        "source": {"sha256": source_sha256, "type": source_type},
        "created_at": (created_at or datetime.now(timezone.utc)).isoformat(),
        "artifacts": [asdict(a) for a in sorted(artifacts, key=lambda a: a.name)],
        "info": info,
    }
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
