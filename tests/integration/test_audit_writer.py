"""The audit writer against real databases (SQLite and PostgreSQL): hash chains, tamper
detection, the journal when the database is really gone, replay exactly once, concurrency and
pagination."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.audit import make_event, stored_rows
from upload_service.audit import (
    GENESIS_HASH,
    AuditAction,
    AuditEvent,
    AuditWriter,
    compute_hash,
    list_events,
    verify_chain,
)
from upload_service.audit.chain import append_event, row_fields
from upload_service.db.engine import build_engine, build_sessionmaker
from upload_service.errors import ErrorCode, ServiceError
from upload_service.settings import DatabaseSettings


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "journal.jsonl"


@pytest.fixture
def writer(sessions: sessionmaker[Session], journal_path: Path) -> AuditWriter:
    return AuditWriter(sessions, journal_path)


@pytest.fixture
def down_writer(dead_sessions: sessionmaker[Session], journal_path: Path) -> AuditWriter:
    return AuditWriter(dead_sessions, journal_path, attempts=2, backoff_seconds=0.001)


def execute(sessions: sessionmaker[Session], sql: str, **params: object) -> None:
    with sessions() as session:
        session.execute(text(sql), params)
        session.commit()


def fill(writer: AuditWriter) -> None:
    for _ in range(3):
        writer.record(make_event("acme"))
    for _ in range(2):
        writer.record(make_event("globex"))
    writer.record(make_event(None, AuditAction.AUTH_FAILED, outcome="failure", error_code="UNAUTHENTICATED"))


def test_events_are_stored_in_one_hash_chain_per_tenant(writer: AuditWriter, sessions: sessionmaker[Session]) -> None:
    fill(writer)
    rows = stored_rows(sessions)
    assert Counter(row.chain for row in rows) == {"acme": 3, "globex": 2, "-": 1}
    for chain in ("acme", "globex", "-"):
        prev = GENESIS_HASH
        for seq, row in enumerate(stored_rows(sessions, chain), start=1):
            assert (row.seq, row.prev_hash) == (seq, prev)
            assert row.hash == compute_hash(prev, row_fields(row), seq)
            prev = row.hash
    assert next(row for row in rows if row.chain == "-").tenant is None
    with sessions() as session:
        assert verify_chain(session) == []
        assert verify_chain(session, "acme") == []
    assert writer.failed_writes == 0 and writer.journal_backlog() == 0


def test_recording_an_event_twice_stores_it_once(writer: AuditWriter, sessions: sessionmaker[Session]) -> None:
    event = make_event()
    writer.record(event)
    writer.record(event)
    assert [row.event_id for row in stored_rows(sessions)] == [event.event_id]


def test_verify_detects_an_edited_row(writer: AuditWriter, sessions: sessionmaker[Session]) -> None:
    fill(writer)
    execute(sessions, "UPDATE audit_events SET size = 999 WHERE chain = 'acme' AND seq = 2")
    with sessions() as session:
        problems = verify_chain(session)
    assert [(p.chain, p.kind, p.seq) for p in problems] == [("acme", "altered", 2)]
    assert "acme" in str(problems[0]) and "seq 2" in str(problems[0])


def test_verify_detects_an_edit_whose_hash_was_recomputed(writer: AuditWriter, sessions: sessionmaker[Session]) -> None:
    fill(writer)
    row = stored_rows(sessions, "acme")[1]
    fields = row_fields(row) | {"outcome": "failure"}
    forged = compute_hash(row.prev_hash, fields, row.seq)
    execute(sessions, "UPDATE audit_events SET outcome = 'failure', hash = :h WHERE id = :id", h=forged, id=row.id)
    with sessions() as session:
        assert [(p.kind, p.seq) for p in verify_chain(session, "acme")] == [("broken_link", 3)]


def test_verify_detects_deleted_rows(writer: AuditWriter, sessions: sessionmaker[Session]) -> None:
    fill(writer)
    execute(sessions, "DELETE FROM audit_events WHERE chain = 'acme' AND seq = 2")
    execute(sessions, "DELETE FROM audit_events WHERE chain = 'globex' AND seq = 2")  # the last one
    with sessions() as session:
        problems = {p.chain: (p.kind, p.seq) for p in verify_chain(session)}
    assert problems == {"acme": ("gap", 2), "globex": ("truncated", 2)}


def test_verify_detects_swapped_hashes(writer: AuditWriter, sessions: sessionmaker[Session]) -> None:
    fill(writer)
    first, second = stored_rows(sessions, "acme")[:2]
    execute(sessions, "UPDATE audit_events SET hash = :h WHERE id = :id", h=second.hash, id=first.id)
    execute(sessions, "UPDATE audit_events SET hash = :h WHERE id = :id", h=first.hash, id=second.id)
    with sessions() as session:
        assert [(p.chain, p.kind, p.seq) for p in verify_chain(session)] == [("acme", "altered", 1)]


def test_database_down_events_go_to_the_journal(
    dead_sessions: sessionmaker[Session], journal_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    failures: list[AuditEvent] = []
    down_writer = AuditWriter(
        dead_sessions, journal_path, attempts=2, backoff_seconds=0.001, on_write_failure=failures.append
    )
    events = [make_event("acme"), make_event("globex"), make_event(None, AuditAction.AUTH_FAILED, outcome="failure")]
    with caplog.at_level(logging.WARNING, logger="upload_service.audit"):
        for event in events:
            down_writer.record(event)  # never raises

    lines = journal_path.read_text().splitlines()
    assert [AuditEvent.from_json(line) for line in lines] == events
    assert all(json.loads(line)["event_id"] for line in lines)
    assert stat.S_IMODE(journal_path.stat().st_mode) == 0o600
    assert synced.count(str(journal_path)) == len(events)  # one fsync per line
    assert down_writer.failed_writes == 3 and failures == events
    assert down_writer.journal_backlog() == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all(e.event_id in w for e, w in zip(events, warnings, strict=True))
    assert not any("postgresql://" in w or "nowhere" in w for w in warnings)


def test_replay_stores_every_journaled_event_exactly_once(
    down_writer: AuditWriter, writer: AuditWriter, sessions: sessionmaker[Session], journal_path: Path
) -> None:
    events = [make_event("acme") for _ in range(4)] + [make_event("globex")]
    for event in events:
        down_writer.record(event)
    assert down_writer.replay_journal() == 0  # still down: nothing moves
    assert journal_path.exists() and down_writer.journal_backlog() == 5

    assert writer.replay_journal() == 5
    assert writer.replay_journal() == 0
    assert sorted(row.event_id for row in stored_rows(sessions)) == sorted(e.event_id for e in events)
    assert writer.journal_backlog() == 0 and not writer.journal.replaying_path.exists()
    with sessions() as session:
        assert verify_chain(session) == []


def test_replay_finishes_a_replay_that_crashed(
    down_writer: AuditWriter, writer: AuditWriter, sessions: sessionmaker[Session], journal_path: Path
) -> None:
    events = [make_event("acme") for _ in range(3)]
    for event in events:
        down_writer.record(event)
    # A replay claimed the journal, stored the first event, then died.
    assert writer.journal.claim()
    writer.record(events[0])
    # ... and crashed again after putting the rest back in the live journal, before cleaning up.
    writer.journal.append(line for line in writer.journal.read_claimed())
    late = make_event("acme")
    down_writer.record(late)  # a new live journal while the leftover waits
    assert writer.journal.replaying_path.exists() and writer.journal_backlog() == 3 + 3 + 1

    assert writer.replay_journal() == 3
    assert writer.replay_journal() == 0
    stored = [row.event_id for row in stored_rows(sessions)]
    assert sorted(stored) == sorted(e.event_id for e in [*events, late])
    assert not writer.journal.replaying_path.exists() and writer.journal_backlog() == 0


REPLAY_SCRIPT = """
import sys
from pathlib import Path
from upload_service.audit import AuditWriter
from upload_service.db.engine import build_engine, build_sessionmaker
from upload_service.settings import DatabaseSettings
AuditWriter(build_sessionmaker(build_engine(DatabaseSettings(url=sys.argv[1]))), Path(sys.argv[2])).replay_journal()
"""


def test_a_replay_killed_midway_loses_and_duplicates_nothing(
    audit_url: str, writer: AuditWriter, sessions: sessionmaker[Session], journal_path: Path
) -> None:
    events = [make_event(("acme", "globex")[i % 2]) for i in range(400)]
    writer.journal.append(event.to_json() for event in events)
    replayer = subprocess.Popen([sys.executable, "-c", REPLAY_SCRIPT, audit_url, str(journal_path)])
    try:
        deadline = time.monotonic() + 60
        while not stored_rows_count(sessions) and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        replayer.kill()  # SIGKILL: no cleanup of any kind
        replayer.wait(timeout=30)
    assert 0 < stored_rows_count(sessions) < len(events)
    assert writer.journal.replaying_path.exists()

    writer.replay_journal()
    rows = stored_rows(sessions)
    assert sorted(row.event_id for row in rows) == sorted(e.event_id for e in events)
    assert writer.journal_backlog() == 0
    with sessions() as session:
        assert verify_chain(session) == []


def stored_rows_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(text("SELECT count(*) FROM audit_events")) or 0


def test_only_one_replay_at_a_time(down_writer: AuditWriter, writer: AuditWriter) -> None:
    down_writer.record(make_event())
    with writer.journal.replay_lock() as mine:  # another process replaying
        assert mine
        assert writer.replay_journal() == 0
        assert writer.journal_backlog() == 1
    assert writer.replay_journal() == 1


def test_a_torn_line_is_quarantined_and_not_glued_to_the_next(
    down_writer: AuditWriter, writer: AuditWriter, sessions: sessionmaker[Session], journal_path: Path
) -> None:
    first = make_event()
    down_writer.record(first)
    with open(journal_path, "ab") as handle:
        handle.write(make_event().to_json().encode()[:40])  # a crash mid-write
    second = make_event()
    down_writer.record(second)
    assert writer.replay_journal() == 2
    assert {row.event_id for row in stored_rows(sessions)} == {first.event_id, second.event_id}
    assert len(writer.journal.corrupt_path.read_text().splitlines()) == 1


def test_replayer_thread_drains_the_journal(
    down_writer: AuditWriter, writer: AuditWriter, sessions: sessionmaker[Session]
) -> None:
    for _ in range(3):
        down_writer.record(make_event())
    stop = threading.Event()
    thread = writer.start_replayer(0.05, stop)
    deadline = time.monotonic() + 10
    while writer.journal_backlog() and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(stored_rows(sessions)) == 3


def test_concurrent_writers_keep_one_valid_chain_per_tenant(audit_url: str, journal_path: Path) -> None:
    engines = [build_engine(DatabaseSettings(url=audit_url)) for _ in range(3)]  # as if 3 processes
    writers = [AuditWriter(build_sessionmaker(engine), journal_path, attempts=5) for engine in engines]
    threads_per_writer, per_thread = 3, 12
    start = threading.Barrier(len(writers) * threads_per_writer)

    def work(writer: AuditWriter, index: int) -> None:
        start.wait()
        writer.record(make_event("fresh"))  # all race to create this chain's head
        for i in range(per_thread):
            writer.record(make_event(("acme", "globex")[(index + i) % 2]))

    threads = [threading.Thread(target=work, args=(w, i)) for w in writers for i in range(threads_per_writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        sessions = build_sessionmaker(engines[0])
        rows = stored_rows(sessions)
        total = len(threads) * (per_thread + 1)
        assert len(rows) == total and len({row.event_id for row in rows}) == total
        for chain, count in Counter(row.chain for row in rows).items():
            assert sorted(row.seq for row in rows if row.chain == chain) == list(range(1, count + 1))
        assert Counter(row.chain for row in rows)["fresh"] == len(threads)
        with sessions() as session:
            assert verify_chain(session) == []
        assert sum(w.failed_writes for w in writers) == 0 and not journal_path.exists()
    finally:
        for engine in engines:
            engine.dispose()


def test_a_chain_head_created_concurrently_is_shared(writer: AuditWriter, sessions: sessionmaker[Session]) -> None:
    """The second writer of a brand-new chain waits for the first (PostgreSQL: on the head's
    unique key, then an IntegrityError and a retry; SQLite: on the write lock)."""
    first, second = make_event("newcomer"), make_event("newcomer")
    with sessions() as session:
        assert append_event(session, first)  # head created, transaction still open
        racer = threading.Thread(target=writer.record, args=(second,))
        racer.start()
        racer.join(timeout=0.5)
        assert racer.is_alive()  # blocked behind the open transaction
        session.commit()
    racer.join(timeout=30)
    assert [(row.event_id, row.seq) for row in stored_rows(sessions)] == [(first.event_id, 1), (second.event_id, 2)]
    assert writer.failed_writes == 0
    with sessions() as session:
        assert verify_chain(session) == []


def test_cursor_pagination_returns_every_event_once_in_order(writer: AuditWriter, sessions: sessionmaker[Session]) -> None:
    mine = []
    for i in range(25):
        action = AuditAction.PROCESSING_FAILED if i % 5 == 0 else AuditAction.UPLOAD_ACCEPTED
        event = make_event("acme", action, upload_id=f"up{i % 3}", outcome="failure" if i % 5 == 0 else "success")
        writer.record(event)
        mine.append(event)
        writer.record(make_event("globex", upload_id=f"up{i % 3}"))

    with sessions() as session:
        seen, cursor, pages = [], None, 0
        while True:
            page, cursor = list_events(session, tenant="acme", cursor=cursor, limit=10)
            seen.extend(page)
            pages += 1
            if cursor is None:
                break
        assert pages == 3
        assert [s.event.event_id for s in seen] == [e.event_id for e in mine]
        assert [s.id for s in seen] == sorted(s.id for s in seen)
        assert all(s.event.tenant == "acme" for s in seen)
        assert seen[0].event == mine[0]

        by_upload, _ = list_events(session, tenant="acme", upload_id="up1", limit=1000)
        assert [s.event.event_id for s in by_upload] == [e.event_id for e in mine if e.upload_id == "up1"]
        failed, _ = list_events(session, tenant="acme", action="processing:failed", outcome="failure")
        assert len(failed) == 5
        one, _ = list_events(session, tenant="acme", request_id=mine[7].request_id)
        assert [s.event.event_id for s in one] == [mine[7].event_id]

        middle = mine[10].occurred_at
        since, _ = list_events(session, tenant="acme", since=middle, limit=1000)
        until, _ = list_events(session, tenant="acme", until=middle, limit=1000)
        assert len(since) + len(until) == 25 and since[0].event.event_id == mine[10].event_id
        later, _ = list_events(session, tenant="acme", since=middle + timedelta(days=1))
        assert later == []
        assert list_events(session, tenant="nobody") == ([], None)

        for bad in ({"cursor": "not-a-cursor"}, {"cursor": "bm9wZQ"}, {"action": "upload:exfiltrated"}, {"limit": 0}):
            with pytest.raises(ServiceError) as caught:
                list_events(session, tenant="acme", **bad)
            assert caught.value.code is ErrorCode.BAD_REQUEST
