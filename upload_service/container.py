"""The concrete clients one process needs, built once from settings and closed at exit.

The API's lifespan and the worker entry both call ``build_services``; nothing else constructs
an engine, a Redis connection or an object store.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from upload_service.db.engine import build_engine, build_sessionmaker, ping
from upload_service.health import Check, CheckFailed, spool_space_check
from upload_service.ingest.sniff import TypeSniffer
from upload_service.jobqueue import JobQueue, connect
from upload_service.service import UploadService
from upload_service.settings import Settings
from upload_service.storage import build_object_store
from upload_service.storage.base import ObjectStore


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: Redis
    queue: JobQueue
    store: ObjectStore
    uploads: UploadService

    def readiness_checks(self) -> dict[str, Check]:
        """What the API needs to accept uploads."""
        return {
            "db": lambda: ping(self.engine),
            "redis": lambda: self.queue.ping(),
            "spool": spool_space_check(self.settings.spool.dir, self.settings.spool.min_free_bytes),
            "s3": lambda: self.store.ping(),
        }

    def health_checks(self) -> dict[str, Check]:
        """Readiness plus whether workers are listening on every queue."""
        return {**self.readiness_checks(), "workers": self._workers_check}

    def _workers_check(self) -> str:
        counts = self.queue.worker_counts()
        idle = sorted(name for name, count in counts.items() if count == 0)
        if idle:
            raise CheckFailed(f"no worker listens on {', '.join(idle)}")
        return ", ".join(f"{name}: {count}" for name, count in sorted(counts.items()))

    def close(self) -> None:
        self.engine.dispose()
        self.redis.close()


def build_services(settings: Settings) -> Services:
    engine = build_engine(settings.database)
    sessions = build_sessionmaker(engine)
    redis = connect(settings.redis)
    queue = JobQueue(redis, settings.queue)
    store = build_object_store(settings.storage)
    uploads = UploadService(settings, sessions, store, queue, TypeSniffer())
    return Services(settings, engine, sessions, redis, queue, store, uploads)
