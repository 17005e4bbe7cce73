"""A processing run's objects in the artifacts bucket: artifacts, the manifest of a failed
upload, and removing a deleted upload's prefix. Keys come from the one key layout."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from upload_service.db.models import Upload
from upload_service.errors import StorageError
from upload_service.storage import keys
from workers import context
from workers.manifest import MANIFEST_NAME, StoredArtifact, build_failed_manifest
from workers.pipelines.base import ArtifactFile

log = logging.getLogger("workers.jobs")


def store_artifact(upload: Upload, artifact: ArtifactFile) -> StoredArtifact:
    ctx = context.current()
    key = keys.artifact_key(upload.tenant, upload.id, artifact.name)
    digest = sha256_of(artifact.path)
    ctx.store.put_file(
        ctx.settings.storage.artifacts_bucket, key, artifact.path, content_type=artifact.content_type, sha256=digest
    )
    return StoredArtifact(artifact.name, key, artifact.path.stat().st_size, artifact.content_type, digest)


def store_bytes(upload: Upload, name: str, data: bytes, content_type: str) -> StoredArtifact:
    ctx = context.current()
    key = keys.artifact_key(upload.tenant, upload.id, name)
    digest = hashlib.sha256(data).hexdigest()
    ctx.store.put_bytes(ctx.settings.storage.artifacts_bucket, key, data, content_type=content_type, sha256=digest)
    return StoredArtifact(name, key, len(data), content_type, digest)


def store_failed_manifest(upload: Upload, code: str, message: str, extra: dict[str, str]) -> None:
    """The ``manifest.json`` of a failed upload (its error, no artifacts), so a consumer of S3
    notifications on that suffix hears of failures too. Best effort: an S3 fault is logged and
    the upload still ends ``failed`` (the API shows it). A DELETE meanwhile removes it with the
    prefix (``_abandon``)."""
    manifest = build_failed_manifest(
        upload_id=upload.id, tenant=upload.tenant, source_sha256=upload.sha256, source_type=upload.detected_type,
        error_code=code, error_message=message, created_at=upload.created_at,
    )
    try:
        store_bytes(upload, MANIFEST_NAME, manifest, "application/json")
    except StorageError:
        log.warning("could not store the failed manifest of upload %s", upload.id, exc_info=True, extra=extra)


def forget_artifacts(tenant: str, upload_id: str) -> None:
    """Remove this upload's artifacts prefix (a DELETE removes the originals); StorageError if S3 fails."""
    ctx = context.current()
    ctx.store.delete_prefix(ctx.settings.storage.artifacts_bucket, keys.upload_prefix(tenant, upload_id))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()
