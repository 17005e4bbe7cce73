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
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from redis.exceptions import RedisError
from rq import get_current_job
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from upload_service.audit import AuditAction, AuditEvent
from upload_service.db import repository
from upload_service.db.engine import session_scope
from upload_service.db.models import Artifact, Upload, UploadStatus
from upload_service.errors import ObjectNotFound, StorageError
from upload_service.media import kind_of
from upload_service.logs import current_request_id
from upload_service.metrics import record_job
from upload_service.storage import keys
from upload_service.webhooks.events import EventType
from upload_service.webhooks.outbox import record_upload_event
from workers import context, failpoints
from workers.manifest import MANIFEST_NAME, StoredArtifact, build_failed_manifest, build_manifest
from workers.pipelines import ProcessingError
from workers.pipelines.base import ArtifactFile
from workers.sandbox import run_pipeline_sandboxed
from workers.scratch import job_scratch, scratch_base

log = logging.getLogger("workers.jobs")

DEADLINE_MARGIN_SECONDS = 3.0
CRASHED = "PROCESSING_CRASHED"
#: The metrics code of a run that stopped because its upload was deleted.
DELETED = "UPLOAD_DELETED"
_TERMINAL_ACTIONS = (AuditAction.PROCESSING_DONE.value, AuditAction.PROCESSING_FAILED.value)
_CLAIM_ATTEMPTS = 3
_CRASHED_MESSAGE = "Processing this file repeatedly crashed or timed out the worker."
_UNAVAILABLE = ("PROCESSING_UNAVAILABLE", "A dependency stayed unavailable while processing; upload again later.")


class TransientError(Exception):
    """A dependency failed; the job should run again later."""


class UploadGone(Exception):
    """The upload was deleted, or is being deleted, while the job ran."""


class _LostRace(Exception):
    """The upload's status changed between the claim's read and its update: roll back, re-read."""


@dataclass(frozen=True)
class Claim:
    """What ``_begin`` found: the upload to process (None: nothing to do), whether it just
    failed for crashing too often, and the tenant of an upload deleted meanwhile (to clean)."""

    upload: Upload | None
    crashed: bool = False
    deleted_tenant: str | None = None


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
        claim = _begin(upload_id)
    except SQLAlchemyError as exc:
        raise TransientError("database unavailable") from exc
    upload = claim.upload
    if upload is None:
        if claim.deleted_tenant is not None:
            _forget_artifacts(claim.deleted_tenant, upload_id)
            log.info("upload deleted before processing; its artifacts prefix is removed", extra=extra)
        return "skipped"
    if claim.crashed:
        _record_metrics(upload, "failed", CRASHED, 0.0)
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
            _webhook(session, upload, EventType.UPLOAD_DONE, artifacts=stored)
            ctx.audit.record_in(session, _event(upload, AuditAction.PROCESSING_DONE, "success"))
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
    _store_failed_manifest(upload, code, message, extra)
    try:
        with session_scope(ctx.sessions) as session:
            moved = repository.set_status(
                session, upload.id, UploadStatus.FAILED, error_code=code, error_message=message,
                only_from=[UploadStatus.PROCESSING],
            )
            if not moved:
                raise UploadGone
            _webhook(session, upload, EventType.UPLOAD_FAILED, error=(code, message))
            ctx.audit.record_in(session, _event(upload, AuditAction.PROCESSING_FAILED, "failure", error_code=code))
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


def _event(
    upload: Upload, action: AuditAction, outcome: str, *, error_code: str | None = None, details: dict[str, bool] | None = None
) -> AuditEvent:
    return AuditEvent(
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
        details=details,
    )


def _webhook(
    session: Session,
    upload: Upload,
    event_type: EventType,
    *,
    artifacts: list[Artifact] | None = None,
    error: tuple[str, str] | None = None,
) -> None:
    """The upload's webhook event, in the transaction of the status change it reports."""
    status = UploadStatus.DONE if event_type is EventType.UPLOAD_DONE else UploadStatus.FAILED
    record_upload_event(
        session, upload, event_type, occurred_at=repository.utcnow(), status=status.value,
        error=error, artifacts=artifacts if artifacts is not None else [],
    )


def _record_metrics(upload: Upload, outcome: str, code: str, seconds: float) -> None:
    try:
        record_job(context.current().queue.connection, kind_of(upload.detected_type), outcome, code, seconds)
    except RedisError:
        log.warning("could not record job metrics", exc_info=True)


def _begin(upload_id: str) -> Claim:
    """Claim the upload for this run (``processing`` and ``processing:started`` committed
    together); count a crash if the previous run never finished."""
    for _ in range(_CLAIM_ATTEMPTS):
        try:
            claim = _try_claim(upload_id)
        except _LostRace:
            continue
        if claim.upload is not None and not claim.crashed:
            failpoints.reached("claimed", upload_id)
        return claim
    raise TransientError("the upload's status kept changing while this run claimed it")


def _try_claim(upload_id: str) -> Claim:
    ctx = context.current()
    with session_scope(ctx.sessions) as session:
        upload = repository.get_upload_any_tenant(session, upload_id)
        if upload is None:
            return Claim(None, deleted_tenant=repository.claimed_tenant(session, upload_id))
        if upload.status == UploadStatus.DELETING:
            return Claim(None, deleted_tenant=upload.tenant)
        if upload.status in (UploadStatus.DONE, UploadStatus.FAILED):
            _record_missing_terminal_event(session, upload)
            return Claim(None)
        if upload.status == UploadStatus.PROCESSING:
            crashes = repository.count_attempt(session, upload_id)
            log.warning("previous run of upload %s did not finish (%d so far)", upload_id, crashes)
            if crashes >= ctx.settings.queue.max_crashes:
                moved = repository.set_status(
                    session,
                    upload_id,
                    UploadStatus.FAILED,
                    error_code=CRASHED,
                    error_message=_CRASHED_MESSAGE,
                    only_from=[UploadStatus.PROCESSING],
                )
                if not moved:
                    raise _LostRace
                # With the status (this run holds the row): no run will come to write it later.
                _store_failed_manifest(upload, CRASHED, _CRASHED_MESSAGE, {"upload_id": upload_id})
                _webhook(session, upload, EventType.UPLOAD_FAILED, error=(CRASHED, _CRASHED_MESSAGE))
                ctx.audit.record_in(session, _event(upload, AuditAction.PROCESSING_FAILED, "failure", error_code=CRASHED))
                return Claim(upload, crashed=True)
        claimable = [UploadStatus.QUEUED, UploadStatus.PROCESSING]
        if not repository.set_status(session, upload_id, UploadStatus.PROCESSING, only_from=claimable):
            raise _LostRace
        ctx.audit.record_in(session, _event(upload, AuditAction.PROCESSING_STARTED, "success"))
        return Claim(upload)


def _record_missing_terminal_event(session: Session, upload: Upload) -> None:
    """Backstop for terminal rows without their terminal event (written before status and
    event shared a transaction): write it now, unless one exists (checked under the lock)."""
    if upload.status == UploadStatus.DONE:
        event = _event(upload, AuditAction.PROCESSING_DONE, "success", details={"recorded_late": True})
    else:
        event = _event(
            upload, AuditAction.PROCESSING_FAILED, "failure", error_code=upload.error_code, details={"recorded_late": True}
        )
    recorded = repository.upload_events(upload.id, _TERMINAL_ACTIONS)
    if session.execute(recorded.limit(1)).first() is not None:
        return  # the usual case, without taking the chain's lock
    if context.current().audit.record_in(session, event, unless=recorded):
        log.warning("upload %s was %s without its terminal audit event; recorded it now", upload.id, upload.status)


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
        if _sha256_of(source) != upload.sha256:
            raise TransientError("the stored original does not match its checksum")
        failpoints.reached("before_pipeline", upload.id)
        result, _usage = run_pipeline_sandboxed(
            kind, source, out_dir, deadline, ctx.sandbox_limits,
            image_limits=ctx.image_limits, pdf_limits=ctx.pdf_limits,
            in_child=lambda: failpoints.reached("in_pipeline", upload.id),
        )
        _check_not_deleted(upload)
        failpoints.reached("before_store", upload.id)
        stored = [_store(upload, artifact) for artifact in result.artifacts]
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
        stored.append(_store_bytes(upload, MANIFEST_NAME, manifest, "application/json"))
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


def _store_failed_manifest(upload: Upload, code: str, message: str, extra: dict[str, str]) -> None:
    """The ``manifest.json`` of a failed upload (its error, no artifacts), so a consumer of S3
    notifications on that suffix hears of failures too. Best effort: an S3 fault is logged and
    the upload still ends ``failed`` (the API shows it). A DELETE meanwhile removes it with the
    prefix (``_abandon``)."""
    manifest = build_failed_manifest(
        upload_id=upload.id, tenant=upload.tenant, source_sha256=upload.sha256, source_type=upload.detected_type,
        error_code=code, error_message=message, created_at=upload.created_at,
    )
    try:
        _store_bytes(upload, MANIFEST_NAME, manifest, "application/json")
    except StorageError:
        log.warning("could not store the failed manifest of upload %s", upload.id, exc_info=True, extra=extra)


def _retry_or_fail(upload: Upload, exc: BaseException, extra: dict[str, str]) -> tuple[str, str]:
    """Hand a transient failure back to RQ for a retry, or fail the upload when none are left
    (``failed`` and ``processing:failed`` in one transaction)."""
    job = get_current_job()
    retries_left = job.retries_left if job is not None and job.retries_left is not None else 0
    ctx = context.current()
    log.warning("transient failure (%d retries left): %r", retries_left, exc, extra=extra)
    if retries_left == 0:
        _store_failed_manifest(upload, *_UNAVAILABLE, extra)
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
                    _webhook(session, upload, EventType.UPLOAD_FAILED, error=_UNAVAILABLE)
                    ctx.audit.record_in(
                        session,
                        _event(upload, AuditAction.PROCESSING_FAILED, "failure", error_code="PROCESSING_UNAVAILABLE"),
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
    ctx = context.current()
    try:
        ctx.store.delete_prefix(ctx.settings.storage.artifacts_bucket, keys.upload_prefix(tenant, upload_id))
    except StorageError as exc:
        raise TransientError("could not remove the artifacts of a deleted upload") from exc


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()
