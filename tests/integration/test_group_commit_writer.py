"""``db.groupcommit.GroupCommit`` on a real database (SQLite and PostgreSQL): items that arrive
while a transaction commits go into the next one together; an item a constraint refuses fails
alone; a failed fire-and-forget item reaches its fallback."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.audit import make_event, stored_rows
from upload_service.audit import AuditEvent, verify_chain
from upload_service.db import repository
from upload_service.db.errors import ConstraintViolation, DatabaseError
from upload_service.db.groupcommit import GroupCommit
from upload_service.db.models import Upload, UploadStatus
from upload_service.groupwrites import NewUpload, write_batch


def new_upload(tenant: str = "acme", idempotency_key: str | None = None) -> NewUpload:
    now = repository.utcnow()
    upload_id = uuid.uuid4().hex
    upload = Upload(
        id=upload_id, tenant=tenant, filename="a.png", size=1, sha256="0" * 64, declared_type="image/png",
        detected_type="image/png", status=UploadStatus.QUEUED, original_key=f"{tenant}/{upload_id}/original",
        idempotency_key=idempotency_key, attempts=0, created_at=now, updated_at=now, artifacts=[],
    )
    return NewUpload(upload, make_event(tenant, upload_id=upload_id))


class Gate:
    """``write_batch`` that holds its first batch until ``open()``, so the next items pile up."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self._open = threading.Event()
        self.holding = threading.Event()

    def open(self) -> None:
        self._open.set()

    def __call__(self, session: Session, items: list[NewUpload | AuditEvent]) -> list[None]:
        self.sizes.append(len(items))
        if len(self.sizes) == 1:
            self.holding.set()
            assert self._open.wait(30)
        return write_batch(session, items)


def test_what_arrives_during_a_commit_goes_into_the_next_batch_and_a_refused_item_fails_alone(
    sessions: sessionmaker[Session],
) -> None:
    gate = Gate()
    writes: GroupCommit[NewUpload | AuditEvent] = GroupCommit(sessions, gate)
    writes.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            first = pool.submit(writes.commit_sync, new_upload())
            assert gate.holding.wait(30)
            items = [new_upload(idempotency_key="k1"), new_upload(), new_upload(idempotency_key="k1"), new_upload()]
            pending: list[Future[None]] = []
            for item in items:
                pending.append(pool.submit(writes.commit_sync, item))
            while len(writes._pending) < len(items):  # all four queued behind the held batch
                threading.Event().wait(0.01)
            gate.open()
            first.result(30)
            outcomes = [f.exception(30) for f in pending]
    finally:
        writes.stop()
    assert gate.sizes[:2] == [1, 4]  # the four went in one transaction, which the duplicate failed
    assert outcomes[0] is None and outcomes[1] is None and outcomes[3] is None
    assert isinstance(outcomes[2], ConstraintViolation)
    with sessions() as session:
        stored = set(session.scalars(select(Upload.id)))
        assert items[2].upload.id not in stored
        assert {items[0].upload.id, items[1].upload.id, items[3].upload.id} <= stored
        assert verify_chain(session) == []
    events = {row.upload_id for row in stored_rows(sessions)}
    assert items[2].upload.id not in events and items[0].upload.id in events


def test_a_posted_event_whose_batch_fails_reaches_its_fallback(dead_sessions: sessionmaker[Session]) -> None:
    writes: GroupCommit[NewUpload | AuditEvent] = GroupCommit(dead_sessions, write_batch)
    writes.start()
    fallen: list[tuple[object, BaseException]] = []
    done = threading.Event()

    def fallback(item: object, error: BaseException) -> None:
        fallen.append((item, error))
        done.set()

    event = make_event("acme")
    try:
        writes.post(event, fallback)
        assert done.wait(30)
        with pytest.raises(DatabaseError):
            writes.commit_sync(new_upload(), timeout=30)
    finally:
        writes.stop()
    assert fallen[0][0] is event and isinstance(fallen[0][1], DatabaseError)


def test_a_stopped_writer_refuses_at_once(sessions: sessionmaker[Session]) -> None:
    writes: GroupCommit[NewUpload | AuditEvent] = GroupCommit(sessions, write_batch)
    with pytest.raises(DatabaseError):
        writes.commit_sync(new_upload(), timeout=5)
    fallen: list[object] = []
    writes.post(make_event("acme"), lambda item, _error: fallen.append(item))
    assert len(fallen) == 1


class Sizes:
    """``write_batch`` that records each batch's size."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, session: Session, items: list[NewUpload | AuditEvent]) -> list[None]:
        self.sizes.append(len(items))
        return write_batch(session, items)


def test_a_batch_waits_for_an_announced_item_and_not_for_a_withdrawn_one(sessions: sessionmaker[Session]) -> None:
    """An item announced with ``expect()`` is waited for (up to ``gather_seconds``): handed in
    0.2 s after another, it shares that one's transaction. A withdrawn announcement ends the
    wait at once, well inside the 30 s window."""
    sizes = Sizes()
    writes: GroupCommit[NewUpload | AuditEvent] = GroupCommit(sessions, sizes, gather_seconds=30.0)
    writes.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            coming = writes.expect()
            early = pool.submit(writes.commit_sync, new_upload())
            threading.Event().wait(0.2)
            assert not early.done()  # waiting for the announced one
            late = pool.submit(writes.commit_sync, new_upload(), None, coming)
            early.result(10)
            late.result(10)

            withdrawn = writes.expect()
            alone = pool.submit(writes.commit_sync, new_upload())
            threading.Event().wait(0.2)
            assert not alone.done()
            withdrawn.cancel()
            alone.result(10)  # long before the 30 s window closes
            withdrawn.cancel()  # a second cancel changes nothing
    finally:
        writes.stop(timeout=10)
    assert sizes.sizes == [2, 1]


def test_the_wait_for_an_announced_item_is_bounded(sessions: sessionmaker[Session]) -> None:
    """An announcement that is never fulfilled delays a batch by ``gather_seconds`` at most."""
    sizes = Sizes()
    writes: GroupCommit[NewUpload | AuditEvent] = GroupCommit(sessions, sizes, gather_seconds=0.3)
    writes.start()
    try:
        never = writes.expect()
        writes.commit_sync(new_upload(), timeout=10)
        writes.commit_sync(new_upload(), timeout=10)
        never.cancel()
    finally:
        writes.stop(timeout=10)
    assert sizes.sizes == [1, 1]


def test_with_nothing_announced_no_batch_waits(sessions: sessionmaker[Session]) -> None:
    """Items handed in without an announcement (a lone request, audit events) never wait,
    even right after a batch of several."""
    gate = Gate()
    writes: GroupCommit[NewUpload | AuditEvent] = GroupCommit(sessions, gate, gather_seconds=30.0)
    writes.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            first = pool.submit(writes.commit_sync, new_upload())
            assert gate.holding.wait(30)
            crowd = [pool.submit(writes.commit_sync, new_upload()) for _ in range(3)]
            while len(writes._pending) < 3:
                threading.Event().wait(0.01)
            gate.open()  # the three go together: a batch of several
            for future in [first, *crowd]:
                future.result(30)
        for _ in range(3):  # one at a time: the 30 s window never opens
            writes.commit_sync(new_upload(), timeout=10)
    finally:
        writes.stop(timeout=10)
    assert gate.sizes == [1, 3, 1, 1, 1]
