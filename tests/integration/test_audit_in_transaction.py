"""``AuditWriter.record_in``: an event appended inside the caller's transaction commits or rolls
back with the caller's own change, holds the tenant's chain head until then, and keeps the
chain valid next to plain writers (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.audit import make_event, stored_rows
from upload_service.audit import AuditAction, AuditWriter, verify_chain
from upload_service.db import repository
from upload_service.db.audit_models import AuditChainHead
from upload_service.db.engine import build_engine, build_sessionmaker, session_scope
from upload_service.db.models import Upload, UploadStatus
from upload_service.settings import DatabaseSettings


@pytest.fixture
def writer(sessions: sessionmaker[Session], tmp_path: Path) -> AuditWriter:
    return AuditWriter(sessions, tmp_path / "audit" / "journal.jsonl")


def add_upload(sessions: sessionmaker[Session], tenant: str = "acme") -> str:
    now = repository.utcnow()
    upload_id = uuid.uuid4().hex
    with session_scope(sessions) as session:
        repository.add_upload(
            session,
            Upload(
                id=upload_id, tenant=tenant, filename="a.png", size=1, sha256="0" * 64, declared_type="image/png",
                detected_type="image/png", status=UploadStatus.PROCESSING, original_key=f"{tenant}/{upload_id}/original",
                attempts=0, created_at=now, updated_at=now,
            ),
        )
    return upload_id


def status_of(sessions: sessionmaker[Session], upload_id: str) -> str | None:
    with sessions() as session:
        return repository.upload_status(session, upload_id)


def test_the_event_commits_with_the_change(writer: AuditWriter, sessions: sessionmaker[Session]) -> None:
    upload_id = add_upload(sessions)
    event = make_event("acme", AuditAction.PROCESSING_DONE, upload_id=upload_id)
    with session_scope(sessions) as session:
        assert repository.set_status(session, upload_id, UploadStatus.DONE, only_from=[UploadStatus.PROCESSING])
        assert writer.record_in(session, event)
    assert status_of(sessions, upload_id) == "done"
    assert [row.event_id for row in stored_rows(sessions)] == [event.event_id]
    with sessions() as session:
        assert verify_chain(session) == []


def test_a_rolled_back_transaction_leaves_neither_change_nor_event(writer: AuditWriter, sessions: sessionmaker[Session]) -> None:
    writer.record(make_event("acme"))
    upload_id = add_upload(sessions)
    with pytest.raises(RuntimeError):
        with session_scope(sessions) as session:
            repository.set_status(session, upload_id, UploadStatus.DONE)
            writer.record_in(session, make_event("acme", AuditAction.PROCESSING_DONE, upload_id=upload_id))
            raise RuntimeError("killed before the commit")
    assert status_of(sessions, upload_id) == "processing"
    assert len(stored_rows(sessions)) == 1
    with sessions() as session:
        head = session.get(AuditChainHead, "acme")
        assert head is not None and head.seq == 1
    writer.record(make_event("acme"))  # the chain goes on from where it was
    assert [row.seq for row in stored_rows(sessions)] == [1, 2]
    with sessions() as session:
        assert verify_chain(session) == []


def test_the_chain_head_stays_locked_until_the_callers_transaction_ends(
    writer: AuditWriter, sessions: sessionmaker[Session]
) -> None:
    writer.record(make_event("acme"))
    upload_id = add_upload(sessions)
    mine, theirs = make_event("acme", AuditAction.PROCESSING_STARTED, upload_id=upload_id), make_event("acme")
    with sessions() as session:
        repository.set_status(session, upload_id, UploadStatus.PROCESSING)
        assert writer.record_in(session, mine)
        racer = threading.Thread(target=writer.record, args=(theirs,))
        racer.start()
        racer.join(timeout=0.5)
        assert racer.is_alive()  # a plain writer of the same tenant waits for our commit
        session.commit()
    racer.join(timeout=30)
    assert [(row.event_id, row.seq) for row in stored_rows(sessions)][1:] == [(mine.event_id, 2), (theirs.event_id, 3)]
    assert writer.failed_writes == 0


def test_unless_skips_the_event_when_the_query_finds_one(writer: AuditWriter, sessions: sessionmaker[Session]) -> None:
    upload_id = add_upload(sessions)
    terminal = ("processing:done", "processing:failed")
    for _ in range(3):
        with session_scope(sessions) as session:
            writer.record_in(
                session,
                make_event("acme", AuditAction.PROCESSING_DONE, upload_id=upload_id),
                unless=repository.upload_events(upload_id, terminal),
            )
    assert [row.action for row in stored_rows(sessions)] == ["processing:done"]


def test_transactional_and_plain_writers_keep_one_valid_chain(audit_url: str, tmp_path: Path) -> None:
    engines = [build_engine(DatabaseSettings(url=audit_url)) for _ in range(2)]  # as if 2 processes
    sessions = [build_sessionmaker(engine) for engine in engines]
    writers = [AuditWriter(s, tmp_path / "journal.jsonl", attempts=5) for s in sessions]
    uploads = [add_upload(sessions[0], "acme") for _ in range(12)]
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def transactional(index: int) -> None:
        start.wait()
        try:
            for upload_id in uploads[index::2]:
                with session_scope(sessions[index]) as session:
                    repository.set_status(session, upload_id, UploadStatus.DONE)
                    writers[index].record_in(session, make_event("acme", AuditAction.PROCESSING_DONE, upload_id=upload_id))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def plain(index: int) -> None:
        start.wait()
        for _ in range(6):
            writers[index].record(make_event("acme"))

    threads = [threading.Thread(target=f, args=(i,)) for f in (transactional, plain) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert errors == []
        rows = stored_rows(sessions[0])
        assert sorted(row.seq for row in rows) == list(range(1, 25))
        assert {status_of(sessions[0], u) for u in uploads} == {"done"}
        with sessions[0]() as session:
            assert verify_chain(session) == []
        assert sum(w.failed_writes for w in writers) == 0
    finally:
        for engine in engines:
            engine.dispose()
