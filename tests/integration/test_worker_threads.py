"""The worker's main process forks a work-horse for every job, whatever its other threads are
doing; a client one of them was using at that moment (a lock held, a request half sent) would be
unusable in the child. So the reconciler and the audit journal's replayer run on clients of
their own, never on the context the work-horses inherit (``workers/context.py``)."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, NoReturn

from sqlalchemy import select

from tests.fixtures.app import Client, LiveServer
from tests.integration.test_delete_race import NOTHING, delete_while_s3_is_down, row_of
from tests.integration.workerfaults import stored_keys
from upload_service.db.audit_models import AuditEventRow
from workers import context, entry


class Tripwire:
    """Stands where a work-horse's client is: a background thread touching it fails its round."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> NoReturn:
        raise AssertionError(f"a background thread used the work-horses' {self._name} ({attribute})")


def test_the_reconciler_finishes_a_delete_on_clients_of_its_own(
    server: LiveServer, client: Client, s3_service: Any
) -> None:
    upload_id = delete_while_s3_is_down(server, client, s3_service)  # left `deleting`, its objects in S3
    time.sleep(server.settings.queue.reconcile_grace_seconds + 0.5)
    inherited = context.build_context(server.settings)
    ctx = dataclasses.replace(inherited, store=Tripwire("object store"), audit=Tripwire("audit writer"))
    stop = threading.Event()
    thread = entry.start_reconciler(ctx, stop)
    try:
        deadline = time.monotonic() + 30
        while row_of(server, upload_id) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(30)
        inherited.close()
    assert not thread.is_alive()
    assert row_of(server, upload_id) is None
    assert stored_keys(server, client, upload_id) == NOTHING
    with server.sessions() as session:
        rows = session.scalars(
            select(AuditEventRow).where(AuditEventRow.upload_id == upload_id, AuditEventRow.action == "upload:deleted")
        ).all()
    assert [row.details for row in rows] == [{"finished_by": "reconciler"}]
