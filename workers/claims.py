"""Claiming an upload for a run: ``processing`` and ``processing:started`` committed together,
a crash counted when the previous run never finished, and after ``queue.max_crashes`` crashes
the upload failed with ``PROCESSING_CRASHED`` (status, failed manifest, webhook and audit event
with it). A terminal upload missing its terminal event (rows from before status and event
shared a transaction) gets it written once."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session

from upload_service.audit import AuditAction
from upload_service.db import repository
from upload_service.db.engine import session_scope
from upload_service.db.models import Upload, UploadStatus
from upload_service.webhooks.events import EventType
from workers import context, failpoints
from workers.outputs import store_failed_manifest
from workers.records import audit_event, webhook_event

log = logging.getLogger("workers.jobs")

CRASHED = "PROCESSING_CRASHED"
_TERMINAL_ACTIONS = (AuditAction.PROCESSING_DONE.value, AuditAction.PROCESSING_FAILED.value)
_CLAIM_ATTEMPTS = 3
_CRASHED_MESSAGE = "Processing this file repeatedly crashed or timed out the worker."


class ClaimContended(Exception):
    """The upload's status kept changing while this run tried to claim it."""


class _LostRace(Exception):
    """The upload's status changed between the claim's read and its update: roll back, re-read."""


@dataclass(frozen=True)
class Claim:
    """What ``begin`` found: the upload to process (None: nothing to do), whether it just
    failed for crashing too often, and the tenant of an upload deleted meanwhile (to clean)."""

    upload: Upload | None
    crashed: bool = False
    deleted_tenant: str | None = None


def begin(upload_id: str) -> Claim:
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
    raise ClaimContended


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
                store_failed_manifest(upload, CRASHED, _CRASHED_MESSAGE, {"upload_id": upload_id})
                webhook_event(session, upload, EventType.UPLOAD_FAILED, error=(CRASHED, _CRASHED_MESSAGE))
                ctx.audit.record_in(session, audit_event(upload, AuditAction.PROCESSING_FAILED, "failure", error_code=CRASHED))
                return Claim(upload, crashed=True)
        claimable = [UploadStatus.QUEUED, UploadStatus.PROCESSING]
        if not repository.set_status(session, upload_id, UploadStatus.PROCESSING, only_from=claimable):
            raise _LostRace
        ctx.audit.record_in(session, audit_event(upload, AuditAction.PROCESSING_STARTED, "success"))
        return Claim(upload)


def _record_missing_terminal_event(session: Session, upload: Upload) -> None:
    """Backstop for terminal rows without their terminal event (written before status and
    event shared a transaction): write it now, unless one exists (checked under the lock)."""
    if upload.status == UploadStatus.DONE:
        event = audit_event(upload, AuditAction.PROCESSING_DONE, "success", details={"recorded_late": True})
    else:
        event = audit_event(
            upload, AuditAction.PROCESSING_FAILED, "failure", error_code=upload.error_code, details={"recorded_late": True}
        )
    recorded = repository.upload_events(upload.id, _TERMINAL_ACTIONS)
    if session.execute(recorded.limit(1)).first() is not None:
        return  # the usual case, without taking the chain's lock
    if context.current().audit.record_in(session, event, unless=recorded):
        log.warning("upload %s was %s without its terminal audit event; recorded it now", upload.id, upload.status)
