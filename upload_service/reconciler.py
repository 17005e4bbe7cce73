"""Find accepted uploads that have no live job and enqueue them. Nothing accepted is lost.

- ``queued`` for longer than the grace period with no job in Redis: Redis was down at accept
  time, or lost its data.
- ``processing`` for longer than its job timeout plus the grace period: the worker running it
  died (RQ would have killed a job at its timeout). Its stale job record is dropped so a fresh
  one can run; that run counts the crash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from upload_service.db import repository
from upload_service.db.engine import build_engine, build_sessionmaker
from upload_service.db.models import UploadStatus
from upload_service.jobqueue import JobQueue, connect
from upload_service.media import kind_of
from upload_service.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    enqueued: list[str] = field(default_factory=list)
    revived: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.enqueued or self.revived or self.released)

    def summary(self) -> str:
        return (
            f"reconciled: {len(self.enqueued)} queued uploads enqueued, {len(self.revived)} stalled uploads "
            f"re-enqueued, {len(self.released)} overdue retries released"
        )


def reconcile(settings: Settings, sessions: sessionmaker[Session], queue: JobQueue) -> ReconcileReport:
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
    return report


def reconcile_once(settings: Settings) -> ReconcileReport:
    """One round with clients of its own (``upload-service reconcile``)."""
    engine = build_engine(settings.database)
    redis = connect(settings.redis)
    try:
        return reconcile(settings, build_sessionmaker(engine), JobQueue(redis, settings.queue))
    finally:
        engine.dispose()
        redis.close()

