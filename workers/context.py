"""The worker process's composition root: settings and the clients built from them.

RQ calls jobs by dotted path with JSON arguments only, so the clients can't travel with the job.
The worker entry builds one ``WorkerContext`` at start and installs it; a forked work-horse
inherits it. Tests install their own. Nothing is built at import, and nothing else in
``workers/`` builds an engine, a Redis connection, an object store or an audit writer: the
main process's background threads get their own from ``build_thread_clients`` here too.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from upload_service.audit import AuditWriter
from upload_service.container import build_audit_writer
from upload_service.db.engine import build_engine, build_sessionmaker
from upload_service.jobqueue import JobQueue, connect
from upload_service.settings import Settings
from upload_service.storage import build_object_store
from upload_service.storage.base import ObjectStore
from workers.pipelines import ImageLimits, PdfLimits
from workers.sandbox import SandboxLimits


@dataclass
class WorkerContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore
    queue: JobQueue
    audit: AuditWriter

    @property
    def image_limits(self) -> ImageLimits:
        processing = self.settings.processing
        return ImageLimits(
            max_pixels=processing.max_pixels,
            max_frames=processing.max_frames,
            max_jpeg_scans=processing.max_jpeg_scans,
            max_segments=processing.max_image_segments,
            thumbnail_sizes=tuple(processing.thumbnail_sizes),
        )

    @property
    def sandbox_limits(self) -> SandboxLimits:
        processing = self.settings.processing
        return SandboxLimits(
            cpu_seconds=processing.max_cpu_seconds_per_file,
            memory_bytes=processing.max_memory_bytes_per_file,
            wall_seconds=processing.max_wall_seconds_per_file,
        )

    @property
    def pdf_limits(self) -> PdfLimits:
        return PdfLimits(max_pages=self.settings.processing.max_pdf_pages)

    def close(self) -> None:
        self.engine.dispose()
        self.queue.connection.close()


def build_context(settings: Settings) -> WorkerContext:
    engine = build_engine(settings.database)
    _drop_pool_in_forked_children(engine)
    sessions = build_sessionmaker(engine)
    return WorkerContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        store=build_object_store(settings.storage),
        queue=JobQueue(connect(settings.redis), settings.queue),
        audit=build_audit_writer(settings, sessions, None),
    )


@dataclass
class ThreadClients:
    """A background thread's own engine, audit writer and (if it needs one) object store.

    The worker's main process forks a work-horse for every job, whatever its other threads
    are doing at that moment; the work-horse inherits the ``WorkerContext``. A client another
    thread was using then — urllib3's pool lock held, a request half sent, the journal's lock
    taken — is unusable in the child, which would wait on it for ever. So the threads of the
    main process (the reconciler, the audit journal's replayer, the webhook dispatcher) never
    use the context's clients, only their own. (Redis is shared: redis-py's pool starts afresh
    in a forked child.)"""

    engine: Engine
    sessions: sessionmaker[Session]
    audit: AuditWriter
    store: ObjectStore | None = None

    def close(self) -> None:
        self.engine.dispose()


def build_thread_clients(settings: Settings, *, with_store: bool = False) -> ThreadClients:
    engine = build_engine(settings.database)
    sessions = build_sessionmaker(engine)
    store = build_object_store(settings.storage) if with_store else None
    return ThreadClients(engine, sessions, build_audit_writer(settings, sessions, None), store)


def _drop_pool_in_forked_children(engine: Engine) -> None:
    """A forked work-horse (and the pipeline child it forks) must not use the worker's pooled
    DB connections: the reconciler thread of the worker talks on the same sockets, and two
    processes on one PostgreSQL connection corrupt each other's results. SQLAlchemy's recipe:
    the child forgets the inherited pool without closing the parent's sockets."""
    ref = weakref.ref(engine)

    def forget() -> None:
        inherited = ref()
        if inherited is not None:
            inherited.dispose(close=False)

    os.register_at_fork(after_in_child=forget)


_installed: WorkerContext | None = None


def install(context: WorkerContext | None) -> None:
    global _installed
    _installed = context


def current() -> WorkerContext:
    """The installed context; a process that installed none builds one from the environment."""
    global _installed
    if _installed is None:
        _installed = build_context(Settings())
    return _installed
