"""The processing job: load → pipeline → store → status. Thin; the work is in the pipelines.

Safe to run twice: artifacts go to fixed keys, the manifest is rebuilt from the same inputs, and
the DB's artifact rows are replaced, never appended. Failure semantics:

- permanent (corrupt file, bomb, encrypted PDF): status ``failed`` with the pipeline's code, once;
- transient (S3, DB or Redis unreachable): status back to ``queued`` and the exception re-raised
  so RQ retries with backoff; with no retries left the upload ends ``failed`` with
  ``PROCESSING_UNAVAILABLE`` rather than waiting for ever;
- a worker killed mid-job leaves the upload ``processing``; the next run of the job (RQ's retry
  of an abandoned job, or the reconciler) counts that as a crash, and after
  ``queue.max_crashes`` crashes the upload ends ``failed`` with ``PROCESSING_CRASHED``.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from pathlib import Path

from redis.exceptions import RedisError
from rq import get_current_job
from sqlalchemy.exc import SQLAlchemyError

from upload_service.audit import AuditAction, AuditEvent
from upload_service.db import repository
from upload_service.db.engine import session_scope
from upload_service.db.models import Artifact, Upload, UploadStatus
from upload_service.errors import ObjectNotFound, StorageError
from upload_service.media import kind_of
from upload_service.logs import current_request_id
from upload_service.metrics import record_job
from upload_service.storage import keys
from workers import context
from workers.manifest import MANIFEST_NAME, StoredArtifact, build_manifest
from workers.pipelines import ProcessingError, run_pipeline_for
from workers.pipelines.base import ArtifactFile

log = logging.getLogger("workers.jobs")

DEADLINE_MARGIN_SECONDS = 3.0
CRASHED = "PROCESSING_CRASHED"


class TransientError(Exception):
    """A dependency failed; the job should run again later."""


def process_upload(upload_id: str, request_id: str | None = None) -> str:
    """The RQ job (enqueued by name as ``workers.jobs.process_upload``). Returns the outcome."""
    token = current_request_id.set(request_id)
    try:
        return _process(upload_id)
    finally:
        current_request_id.reset(token)


def _process(upload_id: str) -> str:
    extra = {"upload_id": upload_id}
    try:
        upload, crashed = _begin(upload_id)
    except SQLAlchemyError as exc:
        raise TransientError("database unavailable") from exc
    if upload is None:
        return "skipped"
    if crashed:
        _audit(upload, AuditAction.PROCESSING_FAILED, "failure", error_code=CRASHED)
        _record_metrics(upload, "failed", CRASHED, 0.0)
        return "failed"
    extra["tenant"] = upload.tenant
    log.info("processing started", extra=extra)
    _audit(upload, AuditAction.PROCESSING_STARTED, "success")
    started = time.monotonic()
    outcome, code = _attempt(upload, extra)
    _record_metrics(upload, outcome, code, time.monotonic() - started)
    if outcome == "done":
        _audit(upload, AuditAction.PROCESSING_DONE, "success")
        log.info("processing done in %.3f s", time.monotonic() - started, extra=extra)
    elif outcome == "failed":
        _audit(upload, AuditAction.PROCESSING_FAILED, "failure", error_code=code)
    elif outcome == "retry":
        raise TransientError(f"transient failure: {code}")
    return outcome


def _attempt(upload: Upload, extra: dict[str, str]) -> tuple[str, str]:
    """One run of the pipeline and the stores: ``(outcome, error code)``, outcome one of
    ``done``, ``failed``, ``retry`` (RQ runs it again later) or ``skipped``."""
    ctx = context.current()
    try:
        stored = _run(upload)
    except ProcessingError as exc:
        if exc.permanent:
            _finish_failed(upload.id, exc.code, exc.message)
            log.warning("processing failed: %s (%s)", exc.code, exc.internal or exc.message, extra=extra)
            return "failed", exc.code
        return _retry_or_fail(upload.id, exc, extra)
    except ObjectNotFound:
        _finish_failed(upload.id, "ORIGINAL_MISSING", "The stored original of this upload is gone.")
        log.error("original missing from the object store", extra=extra)
        return "failed", "ORIGINAL_MISSING"
    except (StorageError, SQLAlchemyError, OSError, TransientError) as exc:
        return _retry_or_fail(upload.id, exc, extra)
    try:
        with session_scope(ctx.sessions) as session:
            if repository.get_upload_any_tenant(session, upload.id) is None:
                _forget_artifacts(upload)  # deleted while we worked
                return "skipped", ""
            repository.replace_artifacts(session, upload.id, stored)
            repository.set_status(session, upload.id, UploadStatus.DONE)
    except SQLAlchemyError as exc:
        return _retry_or_fail(upload.id, exc, extra)
    return "done", ""


def _audit(upload: Upload, action: AuditAction, outcome: str, *, error_code: str | None = None) -> None:
    context.current().audit.record(
        AuditEvent(
            action=action,
            outcome=outcome,
            tenant=upload.tenant,
            request_id=current_request_id.get(),
            upload_id=upload.id,
            sha256=upload.sha256,
            declared_type=upload.declared_type,
            detected_type=upload.detected_type,
            size=upload.size,
            error_code=error_code,
        )
    )


def _record_metrics(upload: Upload, outcome: str, code: str, seconds: float) -> None:
    try:
        record_job(context.current().queue.connection, kind_of(upload.detected_type), outcome, code, seconds)
    except RedisError:
        log.warning("could not record job metrics", exc_info=True)


def _begin(upload_id: str) -> tuple[Upload | None, bool]:
    """Claim the upload for this run; count a crash if the previous run never finished.

    Returns the upload (None: nothing to do) and whether it just failed for crashing too often.
    """
    ctx = context.current()
    with session_scope(ctx.sessions) as session:
        upload = repository.get_upload_any_tenant(session, upload_id)
        if upload is None or upload.status in (UploadStatus.DONE, UploadStatus.FAILED):
            return None, False
        if upload.status == UploadStatus.PROCESSING:
            crashes = repository.count_attempt(session, upload_id)
            log.warning("previous run of upload %s did not finish (%d so far)", upload_id, crashes)
            if crashes >= ctx.settings.queue.max_crashes:
                repository.set_status(
                    session,
                    upload_id,
                    UploadStatus.FAILED,
                    error_code=CRASHED,
                    error_message="Processing this file repeatedly crashed or timed out the worker.",
                )
                session.flush()
                session.expunge(upload)
                return upload, True
        repository.set_status(session, upload_id, UploadStatus.PROCESSING)
        session.flush()
        session.expunge(upload)
        return upload, False


def _run(upload: Upload) -> list[Artifact]:
    """Fetch the original, run the pipeline, store artifacts, then the manifest (last)."""
    ctx = context.current()
    kind = kind_of(upload.detected_type)
    timeout = ctx.queue.policy(kind).timeout_seconds
    deadline = time.monotonic() + max(timeout - DEADLINE_MARGIN_SECONDS, 1.0)
    with tempfile.TemporaryDirectory(prefix="upload-job-") as scratch:
        source = Path(scratch) / "original"
        out_dir = Path(scratch) / "out"
        out_dir.mkdir()
        ctx.store.download_file(ctx.settings.storage.originals_bucket, upload.original_key, source)
        if _sha256_of(source) != upload.sha256:
            raise TransientError("the stored original does not match its checksum")
        result = run_pipeline_for(
            kind, source, out_dir, deadline, image_limits=ctx.image_limits, pdf_limits=ctx.pdf_limits
        )
        stored = [_store(upload, artifact) for artifact in result.artifacts]
        manifest = build_manifest(
            upload_id=upload.id,
            tenant=upload.tenant,
            source_sha256=upload.sha256,
            source_type=upload.detected_type,
            artifacts=stored,
            info=result.info,
            created_at=upload.created_at,
        )
        stored.append(_store_bytes(upload, MANIFEST_NAME, manifest, "application/json"))
    return [
        Artifact(upload_id=upload.id, name=s.name, key=s.key, size=s.size, content_type=s.type, sha256=s.sha256)
        for s in stored
    ]


def _store(upload: Upload, artifact: ArtifactFile) -> StoredArtifact:
    ctx = context.current()
    key = keys.artifact_key(upload.tenant, upload.id, artifact.name)
    digest = _sha256_of(artifact.path)
    ctx.store.put_file(
        ctx.settings.storage.artifacts_bucket, key, artifact.path, content_type=artifact.content_type, sha256=digest
    )
    return StoredArtifact(artifact.name, key, artifact.path.stat().st_size, artifact.content_type, digest)


def _store_bytes(upload: Upload, name: str, data: bytes, content_type: str) -> StoredArtifact:
    ctx = context.current()
    key = keys.artifact_key(upload.tenant, upload.id, name)
    digest = hashlib.sha256(data).hexdigest()
    ctx.store.put_bytes(ctx.settings.storage.artifacts_bucket, key, data, content_type=content_type, sha256=digest)
    return StoredArtifact(name, key, len(data), content_type, digest)


def _retry_or_fail(upload_id: str, exc: BaseException, extra: dict[str, str]) -> tuple[str, str]:
    """Hand a transient failure back to RQ for a retry, or fail the upload when none are left."""
    job = get_current_job()
    retries_left = job.retries_left if job is not None and job.retries_left is not None else 0
    ctx = context.current()
    try:
        with session_scope(ctx.sessions) as session:
            if retries_left > 0:
                repository.set_status(session, upload_id, UploadStatus.QUEUED, only_from=[UploadStatus.PROCESSING])
            else:
                repository.set_status(
                    session,
                    upload_id,
                    UploadStatus.FAILED,
                    error_code="PROCESSING_UNAVAILABLE",
                    error_message="A dependency stayed unavailable while processing; upload again later.",
                    only_from=[UploadStatus.PROCESSING],
                )
    except SQLAlchemyError:
        log.warning("could not record the transient failure of upload %s", upload_id, exc_info=True)
    log.warning("transient failure (%d retries left): %r", retries_left, exc, extra=extra)
    if retries_left > 0:
        return "retry", type(exc).__name__
    return "failed", "PROCESSING_UNAVAILABLE"


def _finish_failed(upload_id: str, code: str, message: str) -> None:
    ctx = context.current()
    with session_scope(ctx.sessions) as session:
        repository.set_status(session, upload_id, UploadStatus.FAILED, error_code=code, error_message=message)


def _forget_artifacts(upload: Upload) -> None:
    ctx = context.current()
    ctx.store.delete_prefix(ctx.settings.storage.artifacts_bucket, keys.upload_prefix(upload.tenant, upload.id))


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()
