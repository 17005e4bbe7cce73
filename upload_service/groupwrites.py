"""What the API process's group commit writes, and the audit sink that feeds it.

One ``GroupCommit`` per API process (built in ``container``) takes two kinds of items:

- ``NewUpload``: an accepted upload's row, its webhook outbox rows and its ``upload:accepted``
  audit event — all in the batch's one transaction, so an accepted upload can never exist
  without its event; the caller answers ``202`` once the batch has committed and the batch's
  processing jobs have been enqueued (one Redis round trip);
- an ``AuditEvent`` posted by ``GroupAuditSink``: every other event of the process (rejections,
  reads, auth failures), fire-and-forget; a failed batch hands it to ``AuditWriter.record``
  (retries, then the fsync'd journal), so it is not lost either.

Each tenant's hash chain is extended once per batch (``audit.chain.append_events``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from upload_service.audit import AuditEvent, AuditWriter
from upload_service.audit.chain import append_events
from upload_service.audit.writer import log_event
from upload_service.db import repository
from upload_service.db.groupcommit import GroupCommit
from upload_service.db.models import NewUploadValues
from upload_service.jobqueue import JobQueue, ProcessingJob
from upload_service.media import kind_of
from upload_service.webhooks.events import EventType
from upload_service.webhooks.outbox import record_upload_events

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewUpload:
    """An accepted upload: the row's values and its ``upload:accepted`` event."""

    upload: NewUploadValues
    event: AuditEvent


Item = NewUpload | AuditEvent
Writes = GroupCommit[Item]


def write_batch(session: Session, items: list[Item]) -> list[None]:
    """The upload rows, their outbox rows, then every event of the batch in arrival order (the
    chain heads are locked last, for the shortest time)."""
    uploads = [item.upload for item in items if isinstance(item, NewUpload)]
    repository.insert_uploads(session, uploads)
    record_upload_events(session, uploads, EventType.UPLOAD_ACCEPTED)
    # Every event here is offered to the database for the first time (a failed batch's events
    # go to the audit writer, which checks for ones already stored): no lookup needed.
    append_events(session, [item.event if isinstance(item, NewUpload) else item for item in items], new=True)
    return [None] * len(items)


class EnqueueBatch:
    """After a batch commits: its uploads' processing jobs, in one Redis round trip. Best
    effort, as ever: if Redis is down the uploads stay ``queued`` and the reconciler enqueues."""

    def __init__(self, queue: JobQueue) -> None:
        self._queue = queue

    def __call__(self, items: list[Item], _results: list[object]) -> None:
        jobs = [
            ProcessingJob(item.upload.id, kind_of(item.upload.detected_type), item.upload.request_id)
            for item in items
            if isinstance(item, NewUpload)
        ]
        for item in items:
            if isinstance(item, NewUpload):
                log_event(item.event)
        if not jobs:
            return
        try:
            self._queue.enqueue_new_uploads(jobs)
        except Exception:  # noqa: BLE001 - Redis down: the reconciler enqueues them
            log.warning("enqueue of %d upload(s) failed; the reconciler will enqueue them", len(jobs), exc_info=True)


class GroupAuditSink:
    """``record(event)`` posts the event into the next group commit and returns at once; an
    event whose batch fails goes through ``AuditWriter.record`` (retries, then the journal)."""

    def __init__(self, writes: Writes, fallback: AuditWriter) -> None:
        self._writes = writes
        self._fallback = fallback

    def record(self, event: AuditEvent) -> None:
        log_event(event)
        self._writes.post(event, self._record_directly)

    def record_all(self, events: Sequence[AuditEvent]) -> None:
        for event in events:
            self.record(event)

    def _record_directly(self, item: Item, _error: BaseException) -> None:
        assert isinstance(item, AuditEvent)
        self._fallback.record(item)


def build_writes(sessions: sessionmaker[Session], queue: JobQueue, *, gather_seconds: float = 0.0) -> Writes:
    return GroupCommit(
        sessions, write_batch, after_commit=EnqueueBatch(queue), gather_seconds=gather_seconds, name="group-commit"
    )
