"""The one audit writer: the database when it answers, the local journal when it doesn't.

``record`` never raises and never drops an event without saying so: a failed DB write is
retried with backoff, then the event goes to the fsync'd journal, and every such failure is
counted (``failed_writes``, ``on_write_failure``) and logged. ``replay_journal`` moves journaled
events into the DB later, each exactly once (the ``event_id`` is checked under the chain lock
and is unique in the table). ``record_in`` appends an event inside a caller's transaction instead,
so that a state change and its event commit together (the workers' status changes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Select, exists, select, text
from sqlalchemy.exc import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from upload_service.audit.chain import append_event, append_event_unless
from upload_service.audit.events import AuditEvent
from upload_service.audit.journal import Journal
from upload_service.db.audit_models import AuditEventRow
from upload_service.db.engine import session_scope

log = logging.getLogger("upload_service.audit")

#: Called once per event that could not be written where it should be (e.g. a counter's inc).
EventHook = Callable[[AuditEvent], None]
#: Errors meaning "the database is not there right now", as opposed to "this row is refused".
_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)


class AuditWriter:
    """Thread-safe; share one per process (API lifespan, worker)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        journal_path: Path,
        *,
        attempts: int = 3,
        backoff_seconds: float = 0.05,
        on_write_failure: EventHook | None = None,
        on_journal_failure: EventHook | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if backoff_seconds < 0:
            raise ValueError("backoff_seconds must not be negative")
        self._sessions = sessions
        self._journal = Journal(journal_path)
        self._attempts = attempts
        self._backoff_seconds = backoff_seconds
        self._on_write_failure = on_write_failure
        self._on_journal_failure = on_journal_failure
        self._counts = threading.Lock()
        #: Events the DB refused after every attempt (each went to the journal instead).
        self.failed_writes = 0
        #: Events neither the DB nor the journal took: logged in full at ERROR as a last resort.
        self.journal_failures = 0

    @property
    def journal(self) -> Journal:
        return self._journal

    def record(self, event: AuditEvent) -> None:
        """Store ``event``; never raises (it runs after the response, nobody could handle it)."""
        error = self._write_with_retries(event)
        if error is None:
            return
        with self._counts:
            self.failed_writes += 1
        log.warning(
            "audit event %s (%s) not stored after %d attempts (%s); kept in the local journal",
            event.event_id, event.action.value, self._attempts, _describe(error),
        )
        _call(self._on_write_failure, event)
        try:
            self._journal.append([event.to_json()])
        except Exception as exc:  # noqa: BLE001 - disk full, read-only fs: the log is all that's left
            with self._counts:
                self.journal_failures += 1
            log.error(
                "audit event %s could neither be stored nor journaled (%s); event: %s",
                event.event_id, _describe(exc), event.to_json(),
            )
            _call(self._on_journal_failure, event)

    def record_in(self, session: Session, event: AuditEvent, *, unless: Select[Any] | None = None) -> bool:
        """Append ``event`` inside the caller's open transaction, with the change it records.

        A status change and its event then commit together or not at all: a process killed
        between the two can lose neither alone. The tenant's chain head is locked in that
        transaction until it ends, so call this last, just before the commit. There is no
        journal fallback and no retry here: if the transaction fails, the change did not happen
        either, and the caller's own error handling applies. ``unless`` (a query, checked under
        the head lock) skips the event when it returns a row. False if not appended.
        """
        appended = append_event_unless(session, event, already=unless)
        if appended:
            log_event(event)
        return appended

    def replay_journal(self) -> int:
        """Move journaled events into the DB; returns how many were newly stored.

        One replayer at a time (a file lock; a busy lock returns 0 at once). A ``.replaying``
        file left by a crash is finished first, then the live journal is claimed by renaming
        it. Lines the DB still refuses go back to the live journal before the claimed file is
        removed, so a crash at any point leaves every event in a file or the DB; re-reading a
        line already stored is harmless. Unparseable lines go to ``.corrupt``.
        """
        with self._journal.replay_lock() as mine:
            if not mine or not self._journal.has_backlog() or not self._database_answers():
                return 0
            stored = 0
            if self._journal.replaying_path.exists():
                stored += self._replay_claimed()
            if self._journal.claim():
                stored += self._replay_claimed()
            return stored

    def journal_backlog(self) -> int:
        """Events waiting in the journal (for a gauge and for /health)."""
        return self._journal.backlog()

    def start_replayer(self, interval_seconds: float, stop_event: threading.Event) -> threading.Thread:
        """Replay now, then every ``interval_seconds`` until ``stop_event`` is set (daemon thread)."""

        def loop() -> None:
            while True:
                try:
                    self.replay_journal()
                except Exception:  # noqa: BLE001 - keep replaying; the journal keeps the events
                    log.exception("audit journal replay failed; retrying in %s s", interval_seconds)
                if stop_event.wait(interval_seconds):
                    return

        thread = threading.Thread(target=loop, name="audit-journal-replayer", daemon=True)
        thread.start()
        return thread

    def _write_with_retries(self, event: AuditEvent) -> BaseException | None:
        """None once stored (or already there); else the last error."""
        error: BaseException | None = None
        try:
            for attempt in range(self._attempts):
                if attempt:
                    time.sleep(self._backoff_seconds * 2 ** (attempt - 1))
                try:
                    self._store(event)
                    return None
                except SQLAlchemyError as exc:
                    error = exc
        except Exception as exc:  # noqa: BLE001 - a bug must not cost the event: journal it
            log.exception("audit event %s: unexpected error while storing", event.event_id)
            error = exc
        return error

    def _store(self, event: AuditEvent) -> bool:
        """One attempt; True if inserted, False if the event was already stored."""
        try:
            with session_scope(self._sessions) as session:
                return append_event(session, event)
        except IntegrityError:
            # Backstop for the unique event_id: another chain's writer stored it meanwhile.
            with self._sessions() as session:
                if session.scalar(select(exists().where(AuditEventRow.event_id == event.event_id))):
                    return False
            raise

    def _database_answers(self) -> bool:
        try:
            with self._sessions() as session:
                session.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    def _replay_claimed(self) -> int:
        stored = 0
        corrupt: list[str] = []

        def unstored() -> Iterator[str]:
            nonlocal stored
            unavailable = False
            for line in self._journal.read_claimed():
                if unavailable:
                    yield line
                    continue
                try:
                    event = AuditEvent.from_json(line)
                except (ValueError, KeyError, TypeError):
                    corrupt.append(line)
                    continue
                try:
                    stored += self._store(event)
                except _UNAVAILABLE as exc:
                    log.warning("audit replay paused: database unavailable (%s)", _describe(exc))
                    unavailable = True
                    yield line
                except SQLAlchemyError as exc:
                    log.warning(
                        "audit event %s refused by the database (%s); left in the journal",
                        event.event_id, _describe(exc),
                    )
                    yield line

        self._journal.append(unstored())
        if corrupt:
            log.error("audit journal: %d unreadable lines moved to %s", len(corrupt), self._journal.corrupt_path)
            self._journal.quarantine(corrupt)
        self._journal.release_claimed()
        if stored:
            log.info("audit journal: %d events replayed into the database", stored)
        return stored


_event_log = logging.getLogger("upload_service.audit.events")


def log_event(event: AuditEvent) -> None:
    """The event as one JSON log line (besides its row): what happened, never secrets."""
    _event_log.info(
        event.action.value,
        extra={"event": "audit", "outcome": event.outcome, "tenant": event.tenant, "upload_id": event.upload_id,
               "audit_request_id": event.request_id, "error_code": event.error_code},
    )


def _describe(error: BaseException) -> str:
    """The error's class names only: driver messages can carry hosts, users and SQL values."""
    original = getattr(error, "orig", None)
    return type(error).__name__ + (f"/{type(original).__name__}" if original is not None else "")


def _call(hook: EventHook | None, event: AuditEvent) -> None:
    if hook is None:
        return
    try:
        hook(event)
    except Exception:  # noqa: BLE001 - a broken metrics hook must not break auditing
        log.exception("audit metrics hook failed")
