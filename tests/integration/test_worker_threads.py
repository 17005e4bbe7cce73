"""The worker's main process forks a work-horse for every job, whatever its other threads are
doing; a client one of them was using at that moment (a lock held, a request half sent) would be
unusable in the child. So the reconciler and the audit journal's replayer run on clients of
their own, never on the context the work-horses inherit (``workers/context.py``)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import select

from tests.fixtures.app import Client, LiveServer
from tests.fixtures.audit import make_event
from tests.integration.workerfaults import NOTHING, delete_while_s3_is_down, row_of, stored_keys
from upload_service.audit.journal import Journal
from upload_service.db.audit_models import AuditEventRow
from upload_service.settings import Settings
from workers import context, entry


class Tripwire:
    """Stands where a work-horse's client is: a background thread touching it fails its round."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> NoReturn:
        raise AssertionError(f"a background thread used the work-horses' {self._name} ({attribute})")


def run_background_threads(settings: Settings, until: Callable[[], bool], timeout: float = 30) -> None:
    """The worker's reconciler and journal replayer, started as the worker starts them, on a
    context whose store and audit writer are tripwires, until ``until()`` or ``timeout``."""
    inherited = context.build_context(settings)
    ctx = dataclasses.replace(inherited, store=Tripwire("object store"), audit=Tripwire("audit writer"))
    stop = threading.Event()
    thread = entry.start_reconciler(ctx, stop)
    try:
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(30)
        inherited.close()
    assert not thread.is_alive()


def test_the_reconciler_finishes_a_delete_on_clients_of_its_own(
    server: LiveServer, client: Client, s3_service: Any
) -> None:
    upload_id = delete_while_s3_is_down(server, client, s3_service)  # left `deleting`, its objects in S3
    time.sleep(server.settings.queue.reconcile_grace_seconds + 0.5)
    run_background_threads(server.settings, until=lambda: row_of(server, upload_id) is None)
    assert row_of(server, upload_id) is None
    assert stored_keys(server, client, upload_id) == NOTHING
    with server.sessions() as session:
        rows = session.scalars(
            select(AuditEventRow).where(AuditEventRow.upload_id == upload_id, AuditEventRow.action == "upload:deleted")
        ).all()
    assert [row.details for row in rows] == [{"finished_by": "reconciler"}]


def test_the_journal_replayer_stores_events_on_a_writer_of_its_own(server: LiveServer, tmp_path: Path) -> None:
    """Events a worker journaled while the database was down reach the database through the
    replayer's own audit writer (a journal of the worker's own: the API's replayer, reading
    its journal, must not be the one that stores them)."""
    journal_path = tmp_path / "worker-journal.jsonl"
    audit = server.settings.audit.model_copy(update={"journal_path": journal_path})
    settings = server.settings.model_copy(update={"audit": audit})
    events = [make_event("acme", request_id=f"replay-{n}") for n in range(3)]
    Journal(journal_path).append(event.to_json() for event in events)
    ids = [event.event_id for event in events]
    run_background_threads(settings, until=lambda: len(_stored(server, ids)) == len(ids))
    assert sorted(_stored(server, ids)) == sorted(ids)
    assert Journal(journal_path).backlog() == 0


def _stored(server: LiveServer, event_ids: list[str]) -> list[str]:
    with server.sessions() as session:
        return list(session.scalars(select(AuditEventRow.event_id).where(AuditEventRow.event_id.in_(event_ids))))
