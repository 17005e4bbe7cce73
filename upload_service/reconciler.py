"""Find accepted uploads that have no live job and enqueue them. Nothing accepted is lost.

- ``queued`` for longer than the grace period with no job in Redis: Redis was down at accept
  time, or lost its data.
- ``processing`` for longer than its job timeout plus the grace period: the worker running it
  died (RQ would have killed a job at its timeout). Its stale job record is dropped so a fresh
  one can run; that run counts the crash.
- ``deleting`` for longer than the grace period: a DELETE that failed (or died) after its mark.
  Its objects are removed from both buckets, then the row, with an ``upload:deleted`` event in
  the same transaction (``details.finished_by = "reconciler"``).

It builds no clients: the worker runs it with its own (``workers/context.py``), ``upload-service
reconcile`` with the CLI's (``cli/clients.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from upload_service.audit import AuditAction, AuditEvent, AuditWriter
from upload_service.db import repository
from upload_service.db.engine import session_scope
from upload_service.db.models import Upload, UploadStatus
from upload_service.errors import StorageError
from upload_service.jobqueue import JobQueue
from upload_service.media import kind_of
from upload_service.settings import Settings
from upload_service.storage import keys
from upload_service.storage.base import ObjectStore
from upload_service.webhooks.events import EventType
from upload_service.webhooks.outbox import record_upload_event

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    enqueued: list[str] = field(default_factory=list)
    revived: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.enqueued or self.revived or self.released or self.deleted)

    def summary(self) -> str:
        return (
            f"reconciled: {len(self.enqueued)} queued uploads enqueued, {len(self.revived)} stalled uploads "
            f"re-enqueued, {len(self.released)} overdue retries released, {len(self.deleted)} interrupted deletes finished"
        )


def reconcile(
    settings: Settings,
    sessions: sessionmaker[Session],
    queue: JobQueue,
    *,
    store: ObjectStore | None = None,
    audit: AuditWriter | None = None,
) -> ReconcileReport:
    """One round; interrupted deletes are finished only when given the object store."""
    report = ReconcileReport()
    now = repository.utcnow()
    grace = timedelta(seconds=settings.queue.reconcile_grace_seconds)
    with sessions() as session:
        queued = repository.uploads_in_status(session, UploadStatus.QUEUED, older_than=now - grace)
        processing = repository.uploads_in_status(session, UploadStatus.PROCESSING, older_than=now - grace)
    for upload in queued:
        job, created = queue.enqueue_processing(upload.id, kind_of(upload.detected_type), request_id=upload.request_id)
        if created:
            report.enqueued.append(upload.id)
        elif queue.release_overdue_retry(job, settings.queue.reconcile_grace_seconds):
            report.released.append(upload.id)
    for upload in processing:
        kind = kind_of(upload.detected_type)
        stalled_since = now - grace - timedelta(seconds=queue.policy(kind).timeout_seconds)
        if upload.updated_at > stalled_since:
            continue
        queue.drop_job(upload.id)
        queue.enqueue_processing(upload.id, kind, request_id=upload.request_id)
        report.revived.append(upload.id)
    if store is not None:
        report.deleted = finish_deletes(settings, sessions, store, audit, older_than=now - grace)
    return report


def finish_deletes(
    settings: Settings,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    audit: AuditWriter | None,
    *,
    older_than: datetime,
) -> list[str]:
    """Finish the deletes left ``deleting``: objects first, then the row and its event."""
    with sessions() as session:
        stuck = repository.uploads_in_status(session, UploadStatus.DELETING, older_than=older_than)
    finished = []
    for upload in stuck:
        prefix = keys.upload_prefix(upload.tenant, upload.id)
        try:
            store.delete_prefix(settings.storage.originals_bucket, prefix)
            store.delete_prefix(settings.storage.artifacts_bucket, prefix)
        except StorageError:
            log.warning("could not finish deleting upload %s; next round", upload.id, exc_info=True)
            continue
        with session_scope(sessions) as session:
            if repository.upload_status(session, upload.id) != UploadStatus.DELETING:
                continue  # a retried DELETE finished it meanwhile
            record_upload_event(
                session, upload, EventType.UPLOAD_DELETED, occurred_at=repository.utcnow(), status="deleted"
            )
            if not repository.delete_upload(session, upload):
                session.rollback()
                continue
            if audit is not None:
                audit.record_in(session, _deleted_event(upload))
        finished.append(upload.id)
    return finished


def _deleted_event(upload: Upload) -> AuditEvent:
    return AuditEvent(
        action=AuditAction.UPLOAD_DELETED,
        outcome="success",
        tenant=upload.tenant,
        upload_id=upload.id,
        sha256=upload.sha256,
        details={"finished_by": "reconciler"},
    )

