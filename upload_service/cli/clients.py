"""The CLI's composition root: the clients a command needs, built here and nowhere else in the CLI.

One ``CliClients`` per command run. Each client is built on first use, at most once (``keys``
never connects to Redis, ``nginx-config`` to nothing), and ``close`` releases what was built.
The audit writer is the one the API and the workers use (``container.build_audit_writer``).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Self

from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from upload_service.audit import AuditWriter
from upload_service.container import build_audit_writer
from upload_service.db.engine import build_engine, build_sessionmaker
from upload_service.jobqueue import JobQueue, connect
from upload_service.settings import Settings
from upload_service.storage import build_object_store
from upload_service.storage.base import ObjectStore


class CliClients:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def engine(self) -> Engine:
        return build_engine(self.settings.database)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return build_sessionmaker(self.engine)

    @cached_property
    def redis(self) -> Redis:
        return connect(self.settings.redis)

    @cached_property
    def queue(self) -> JobQueue:
        return JobQueue(self.redis, self.settings.queue)

    @cached_property
    def store(self) -> ObjectStore:
        return build_object_store(self.settings.storage)

    @cached_property
    def audit(self) -> AuditWriter:
        return build_audit_writer(self.settings, self.sessions, None)

    def audit_for_journal(self, journal: Path | None) -> AuditWriter:
        """The audit writer, on another journal file when one is named (``audit replay --journal``)."""
        if journal is None:
            return self.audit
        section = self.settings.audit.model_copy(update={"journal_path": journal})
        return build_audit_writer(self.settings.model_copy(update={"audit": section}), self.sessions, None)

    def close(self) -> None:
        """Release what was built; nothing is connected for a client never used."""
        if "engine" in self.__dict__:
            self.engine.dispose()
        if "redis" in self.__dict__:
            self.redis.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
