"""The processing job: claim → load → pipeline → store → status. Thin; the work is in the pipelines.

Safe to run twice: artifacts go to fixed keys, the manifest is rebuilt from the same inputs, and
the DB's artifact rows are replaced, never appended.

Every status change and its audit event commit in one transaction (``AuditWriter.record_in``):
``processing:started`` with the claim, ``processing:done`` with ``done`` and the artifact rows,
``processing:failed`` with ``failed``. A work-horse killed at any point leaves either both or
neither, so the retry never finds a terminal upload without its terminal event (and if it does,
e.g. rows from before this rule, it writes the missing one, once). Failure semantics:

- permanent (corrupt file, bomb, encrypted PDF): status ``failed`` with the pipeline's code, once;
- transient (S3, DB or Redis unreachable): status back to ``queued`` and the exception re-raised
  so RQ retries with backoff; with no retries left the upload ends ``failed`` with
  ``PROCESSING_UNAVAILABLE`` rather than waiting for ever;
- a worker killed mid-job leaves the upload ``processing``; the next run of the job (RQ's retry
  of an abandoned job, or the reconciler) counts that as a crash, and after
  ``queue.max_crashes`` crashes the upload ends ``failed`` with ``PROCESSING_CRASHED``;
- deleted meanwhile: a DELETE first commits the status ``deleting``. The job re-reads the status
  before it stores artifacts and after (before the manifest), and moves to ``done``/``failed``
  only from ``processing``; whenever it finds the upload ``deleting`` or gone it removes its
  artifacts prefix and stops (outcome ``skipped``), so no interleaving leaves an object behind.
  A run that finds the row already gone finds the tenant (the prefix) in the
  ``processing:started`` event its predecessor committed with the claim.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from redis.exceptions import RedisError
from rq import get_current_job
from sqlalchemy.exc import SQLAlchemyError

from upload_service.audit import AuditAction
from upload_service.db import repository
from upload_service.db.engine import session_scope
from upload_service.db.models import Artifact, Upload, UploadStatus
from upload_service.errors import ObjectNotFound, StorageError
from upload_service.media import kind_of
from upload_service.logs import current_request_id
from upload_service.metrics import record_job
from upload_service.webhooks.events import EventType
from workers import claims, context, failpoints, outputs
from workers.manifest import MANIFEST_NAME, build_manifest
from workers.outputs import sha256_of, store_artifact, store_bytes, store_failed_manifest
from workers.pipelines import ProcessingError
from workers.records import audit_event, webhook_event
from workers.sandbox import run_pipeline_sandboxed
from workers.scratch import job_scratch, scratch_base

log = logging.getLogger("workers.jobs")

DEADLINE_MARGIN_SECONDS = 3.0
#: The metrics code of a run that stopped because its upload was deleted.
DELETED = "UPLOAD_DELETED"
_UNAVAILABLE = ("PROCESSING_UNAVAILABLE", "A dependency stayed unavailable while processing; upload again later.")


class TransientError(Exception):
    """A dependency failed; the job should run again later."""


class UploadGone(Exception):
    """The upload was deleted, or is being deleted, while the job ran."""


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
        claim = claims.begin(upload_id)
    except SQLAlchemyError as exc:
        raise TransientError("database unavailable") from exc
    except claims.ClaimContended as exc:
        raise TransientError("the upload's status kept changing while this run claimed it") from exc
    upload = claim.upload
    if upload is None:
        if claim.deleted_tenant is not None:
            _forget_artifacts(claim.deleted_tenant, upload_id)
            log.info("upload deleted before processing; its artifacts prefix is removed", extra=extra)
        return "skipped"
    if claim.crashed:
        _record_metrics(upload, "failed", claims.CRASHED, 0.0)
        return "failed"
    extra["tenant"] = upload.tenant
    log.info("processing started", extra=extra)
    started = time.monotonic()
    outcome, code = _attempt(upload, extra)
    _record_metrics(upload, outcome, code, time.monotonic() - started)
    if outcome == "done":
        log.info("processing done in %.3f s", time.monotonic() - started, extra=extra)
    elif outcome == "retry":
        raise TransientError(f"transient failure: {code}")
    return outcome


def _attempt(upload: Upload, extra: dict[str, str]) -> tuple[str, str]:
    """One run of the pipeline and the stores: ``(outcome, error code)``, outcome one of
    ``done``, ``failed``, ``retry`` (RQ runs it again later) or ``skipped``."""
    try:
        stored = _run(upload)
    except UploadGone:
        return _abandon(upload, extra)
    except ProcessingError as exc:
        if exc.permanent:
            log.warning("processing failed: %s (%s)", exc.code, exc.internal or exc.message, extra=extra)
            return _finish_failed(upload, exc.code, exc.message, extra)
        return _retry_or_fail(upload, exc, extra)
    except ObjectNotFound:
        log.error("original missing from the object store", extra=extra)
        return _finish_failed(upload, "ORIGINAL_MISSING", "The stored original of this upload is gone.", extra)
    except (StorageError, SQLAlchemyError, OSError, TransientError) as exc:
        return _retry_or_fail(upload, exc, extra)
    return _finish_done(upload, stored, extra)


def _finish_done(upload: Upload, stored: list[Artifact], extra: dict[str, str]) -> tuple[str, str]:
    """``done``, the artifact rows and ``processing:done`` in one transaction, only from
    ``processing`` (a DELETE's committed mark makes this a no-op and the job cleans up)."""
    ctx = context.current()
    try:
        with session_scope(ctx.sessions) as session:
            if not repository.set_status(session, upload.id, UploadStatus.DONE, only_from=[UploadStatus.PROCESSING]):
                raise UploadGone
            repository.replace_artifacts(session, upload.id, stored)
            webhook_event(session, upload, EventType.UPLOAD_DONE, artifacts=stored)
            ctx.audit.record_in(session, audit_event(upload, AuditAction.PROCESSING_DONE, "success"))
    except UploadGone:
        return _abandon(upload, extra)
    except SQLAlchemyError as exc:
        return _retry_or_fail(upload, exc, extra)
    failpoints.reached("finished", upload.id)
    return "done", ""


def _finish_failed(upload: Upload, code: str, message: str, extra: dict[str, str]) -> tuple[str, str]:
    """``failed`` and ``processing:failed`` in one transaction, only from ``processing``; the
    failed ``manifest.json`` first (as ``done`` stores its manifest before its status)."""
    ctx = context.current()
    store_failed_manifest(upload, code, message, extra)
    try:
        with session_scope(ctx.sessions) as session:
            moved = repository.set_status(
                session, upload.id, UploadStatus.FAILED, error_code=code, error_message=message,
                only_from=[UploadStatus.PROCESSING],
            )
            if not moved:
                raise UploadGone
            webhook_event(session, upload, EventType.UPLOAD_FAILED, error=(code, message))
            ctx.audit.record_in(session, audit_event(upload, AuditAction.PROCESSING_FAILED, "failure", error_code=code))
    except UploadGone:
        return _abandon(upload, extra)
    except SQLAlchemyError as exc:
        return _retry_or_fail(upload, exc, extra)
    failpoints.reached("finished", upload.id)
    return "failed", code


def _abandon(upload: Upload, extra: dict[str, str]) -> tuple[str, str]:
    """The upload left ``processing`` under us. Deleted (or being deleted): remove whatever this
    run stored and stop. Anything else (another run took it over): stop, touching nothing."""
    ctx = context.current()
    try:
        with ctx.sessions() as session:
            status = repository.upload_status(session, upload.id)
    except SQLAlchemyError as exc:
        log.warning("could not re-read the status of upload %s: %r", upload.id, exc, extra=extra)
        return "retry", type(exc).__name__
    if status is not None and status != UploadStatus.DELETING:
        log.warning("upload moved to %s while this run worked; leaving it to that run", status, extra=extra)
        return "skipped", ""
    try:
        _forget_artifacts(upload.tenant, upload.id)
    except TransientError:
        return "retry", "StorageError"
    log.info("upload deleted while processing; its artifacts prefix is removed", extra=extra)
    return "skipped", DELETED


def _record_metrics(upload: Upload, outcome: str, code: str, seconds: float) -> None:
    try:
        record_job(context.current().queue.connection, kind_of(upload.detected_type), outcome, code, seconds)
    except RedisError:
        log.warning("could not record job metrics", exc_info=True)


def _run(upload: Upload) -> list[Artifact]:
    """Fetch the original, run the pipeline, store artifacts, then the manifest (last).

    Raises ``UploadGone`` if the upload is being deleted before or after the artifacts are
    stored (the caller removes them)."""
    ctx = context.current()
    kind = kind_of(upload.detected_type)
    timeout = ctx.queue.policy(kind).timeout_seconds
    deadline = time.monotonic() + max(timeout - DEADLINE_MARGIN_SECONDS, 1.0)
    with _job_scratch(ctx) as scratch:
        source = Path(scratch) / "original"
        out_dir = Path(scratch) / "out"
        out_dir.mkdir()
        ctx.store.download_file(ctx.settings.storage.originals_bucket, upload.original_key, source)
        if sha256_of(source) != upload.sha256:
            raise TransientError("the stored original does not match its checksum")
        failpoints.reached("before_pipeline", upload.id)
        result, _usage = run_pipeline_sandboxed(
            kind, source, out_dir, deadline, ctx.sandbox_limits,
            image_limits=ctx.image_limits, pdf_limits=ctx.pdf_limits,
            in_child=lambda: failpoints.reached("in_pipeline", upload.id),
        )
        _check_not_deleted(upload)
        failpoints.reached("before_store", upload.id)
        stored = [store_artifact(upload, artifact) for artifact in result.artifacts]
        failpoints.reached("artifacts_stored", upload.id)
        _check_not_deleted(upload)  # a DELETE that came while we stored: no manifest after its mark
        manifest = build_manifest(
            upload_id=upload.id,
            tenant=upload.tenant,
            source_sha256=upload.sha256,
            source_type=upload.detected_type,
            artifacts=stored,
            info=result.info,
            created_at=upload.created_at,
        )
        stored.append(store_bytes(upload, MANIFEST_NAME, manifest, "application/json"))
        failpoints.reached("manifest_stored", upload.id)
    return [
        Artifact(upload_id=upload.id, name=s.name, key=s.key, size=s.size, content_type=s.type, sha256=s.sha256)
        for s in stored
    ]


def _job_scratch(ctx: context.WorkerContext) -> contextlib.AbstractContextManager[Path]:
    """This job's scratch directory; what killed jobs left behind is swept first."""
    queue = ctx.settings.queue
    # RQ kills a work-horse at most 60 s past its job timeout: older entries are surely dead.
    stale_after = max(queue.image_timeout_seconds, queue.pdf_timeout_seconds) + 120
    return job_scratch(scratch_base(ctx.settings.processing.scratch_dir), stale_after)


def _retry_or_fail(upload: Upload, exc: BaseException, extra: dict[str, str]) -> tuple[str, str]:
    """Hand a transient failure back to RQ for a retry, or fail the upload when none are left
    (``failed`` and ``processing:failed`` in one transaction)."""
    job = get_current_job()
    retries_left = job.retries_left if job is not None and job.retries_left is not None else 0
    ctx = context.current()
    log.warning("transient failure (%d retries left): %r", retries_left, exc, extra=extra)
    if retries_left == 0:
        store_failed_manifest(upload, *_UNAVAILABLE, extra)
    try:
        with session_scope(ctx.sessions) as session:
            if retries_left > 0:
                moved = repository.set_status(
                    session, upload.id, UploadStatus.QUEUED, only_from=[UploadStatus.PROCESSING]
                )
            else:
                moved = repository.set_status(
                    session,
                    upload.id,
                    UploadStatus.FAILED,
                    error_code="PROCESSING_UNAVAILABLE",
                    error_message=_UNAVAILABLE[1],
                    only_from=[UploadStatus.PROCESSING],
                )
                if moved:
                    webhook_event(session, upload, EventType.UPLOAD_FAILED, error=_UNAVAILABLE)
                    ctx.audit.record_in(
                        session,
                        audit_event(upload, AuditAction.PROCESSING_FAILED, "failure", error_code="PROCESSING_UNAVAILABLE"),
                    )
    except SQLAlchemyError:
        # Nothing changed, event included: the upload stays ``processing`` and the reconciler
        # revives it after its timeout (counted as a crash).
        log.warning("could not record the transient failure of upload %s", upload.id, exc_info=True)
        return ("retry", type(exc).__name__) if retries_left > 0 else ("failed", "PROCESSING_UNAVAILABLE")
    if not moved:
        return _abandon(upload, extra)
    if retries_left > 0:
        return "retry", type(exc).__name__
    failpoints.reached("finished", upload.id)
    return "failed", "PROCESSING_UNAVAILABLE"


def _check_not_deleted(upload: Upload) -> None:
    """Raise ``UploadGone`` if a DELETE has marked (or removed) the upload."""
    with context.current().sessions() as session:
        status = repository.upload_status(session, upload.id)
    if status is None or status == UploadStatus.DELETING:
        raise UploadGone


def _forget_artifacts(tenant: str, upload_id: str) -> None:
    """Remove this upload's artifacts prefix (a DELETE removes the originals)."""
    try:
        outputs.forget_artifacts(tenant, upload_id)
    except StorageError as exc:
        raise TransientError("could not remove the artifacts of a deleted upload") from exc
