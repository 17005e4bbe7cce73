"""The concrete clients one process needs, built once from settings and closed at exit.

The API's lifespan calls ``build_services``: one engine, Redis connection, object store, audit
writer and group commit writer (``groupwrites``) per API process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from upload_service.admission import Admission
from upload_service.auth import KeyAuthenticator
from upload_service.audit import AuditEvent, AuditWriter
from upload_service.db.engine import build_engine, build_sessionmaker, ping
from upload_service.catalog import UploadCatalog
from upload_service.groupwrites import GroupAuditSink, Writes, build_writes
from upload_service.health import Check, CheckFailed, spool_check
from upload_service.ingest.sniff import TypeSniffer
from upload_service.jobqueue import JobQueue, connect
from upload_service.metrics import ApiMetrics, multiprocess_dir
from upload_service.db import repository
from upload_service.db.engine import session_scope
from upload_service.pending import PendingOriginals, sweep_dead_ledgers
from upload_service.service import UploadService
from upload_service.settings import Settings
from upload_service.storage import build_object_store
from upload_service.storage.base import ObjectStore

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: Redis
    queue: JobQueue
    store: ObjectStore
    uploads: UploadService
    #: Reading, changing and deleting stored uploads.
    catalog: UploadCatalog
    audit: AuditWriter
    admission: Admission
    metrics: ApiMetrics
    #: The process's group commit writer (accepts and audit events) and the sink feeding it.
    writes: Writes
    audit_sink: GroupAuditSink
    keys: KeyAuthenticator
    #: Originals stored whose rows are not committed yet (swept after a crash).
    pending: PendingOriginals
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def readiness_checks(self) -> dict[str, Check]:
        """Whether this node can serve: its spool takes files and has room, its own DB pool
        answers. Nothing shared by every node (Redis, S3, queue depth): an outage there would
        take all nodes out of rotation at once, while uploads are still accepted without Redis
        and a request that needs S3 or a shorter queue gets its own 503 with Retry-After."""
        return {
            "db": lambda: ping(self.engine),
            "spool": spool_check(self.settings.spool.dir, self.settings.spool.min_free_bytes),
        }

    def health_checks(self) -> dict[str, Check]:
        """Readiness plus the shared dependencies: Redis, S3, queue depth, workers on every queue."""
        return {
            **self.readiness_checks(),
            "redis": lambda: self.queue.ping(),
            "s3": lambda: self.store.ping(),
            "admission": self.admission.readiness_check,
            "workers": self._workers_check,
        }

    def _workers_check(self) -> str:
        counts = self.queue.worker_counts()
        idle = sorted(name for name, count in counts.items() if count == 0)
        if idle:
            raise CheckFailed(f"no worker listens on {', '.join(idle)}")
        return ", ".join(f"{name}: {count}" for name, count in sorted(counts.items()))

    def start_background(self) -> None:
        """Start the group commit writer; replay the audit journal now and periodically (events
        a DB outage left behind)."""
        self.writes.start()
        self._threads.append(self.audit.start_replayer(self.settings.audit.replay_interval_seconds, self._stop))
        self._threads.append(_start_thread("sweep-pending-originals", self.sweep_pending_originals))

    def sweep_pending_originals(self) -> int:
        """Delete the originals that dead processes stored but never recorded (``pending``)."""

        def recorded(upload_ids: list[str]) -> set[str]:
            with session_scope(self.sessions) as session:
                return repository.existing_upload_ids(session, upload_ids)

        def delete(key: str) -> None:
            self.store.delete(self.settings.storage.originals_bucket, key)

        removed = sweep_dead_ledgers(pending_originals_dir(self.settings), recorded, delete)
        if removed:
            log.info("removed %d original(s) a dead process stored without recording them", removed)
        return removed

    def close(self) -> None:
        self.writes.stop()  # commits what is pending and answers everyone first
        self.pending.close()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.engine.dispose()
        self.redis.close()


def build_audit_writer(settings: Settings, sessions: sessionmaker[Session], metrics: ApiMetrics | None) -> AuditWriter:
    def count_failure(event: AuditEvent) -> None:
        if metrics is not None:
            metrics.audit_write_failures.labels(action=event.action.value).inc()

    return AuditWriter(
        sessions,
        settings.audit.journal_path,
        attempts=settings.audit.write_attempts,
        backoff_seconds=settings.audit.write_backoff_seconds,
        on_write_failure=count_failure,
    )


def build_services(settings: Settings) -> Services:
    engine = build_engine(settings.database)
    sessions = build_sessionmaker(engine)
    redis = connect(settings.redis)
    queue = JobQueue(redis, settings.queue)
    store = build_object_store(settings.storage)
    metrics = ApiMetrics(multiprocess_dir())  # set by `serve --workers N`
    audit = build_audit_writer(settings, sessions, metrics)
    metrics.watch_journal(audit.journal_backlog)
    metrics.add_queue_collector(queue)
    admission = Admission(settings.admission, settings.spool.dir, settings.spool.min_free_bytes, queue)
    writes = build_writes(sessions, queue, gather_seconds=settings.database.group_commit_gather_ms / 1000)
    audit_sink = GroupAuditSink(writes, audit)
    pending = PendingOriginals(pending_originals_dir(settings))
    uploads = UploadService(settings, sessions, store, queue, TypeSniffer(), admission, writes, audit_sink, pending)
    catalog = UploadCatalog(settings, store)
    keys = KeyAuthenticator(sessions)
    return Services(
        settings, engine, sessions, redis, queue, store, uploads, catalog, audit, admission, metrics, writes,
        audit_sink, keys, pending,
    )


def pending_originals_dir(settings: Settings) -> Path:
    """The ledgers of originals stored before their rows (``pending``): beside the audit
    journal, the process's other local state that must outlive a crash."""
    return settings.audit.journal_path.parent / "pending-originals"


def _start_thread(name: str, target: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except Exception:  # noqa: BLE001 - a background sweep must not take the process down
            log.exception("%s failed", name)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread
