"""The accept path's group commit, through real API processes on SQLite and PostgreSQL: a batch
whose commit fails answers every request in it with 503 and leaves nothing; a SIGKILL during a
run of uploads leaves only complete uploads; two processes writing one tenant keep one intact
chain with exactly one ``upload:accepted`` event per upload."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from tests import samples
from tests.fixtures.app import Client, LiveServer, start_api
from tests.integration.contract import assert_error
from tests.integration.leftovers import multipart_uploads, wait_until
from upload_service.audit import verify_chain
from upload_service.db.audit_models import AuditEventRow
from upload_service.db.models import Upload
from upload_service.devstack.process import ManagedProcess
from upload_service.pids import pid_alive
from upload_service.storage import keys

PART = 5 * 1024 * 1024


@pytest.fixture
def streaming(server_factory: Callable[..., LiveServer]) -> LiveServer:
    """An API process of its own (5 MiB parts: larger originals are multipart uploads)."""
    return server_factory(storage={"multipart_part_bytes": PART})


def accepted_events(sessions: sessionmaker[Session], upload_id: str) -> int:
    with sessions() as session:
        statement = select(func.count()).where(
            AuditEventRow.upload_id == upload_id, AuditEventRow.action == "upload:accepted"
        )
        return session.scalar(statement) or 0


def tenant_rows(sessions: sessionmaker[Session], tenant: str) -> list[Upload]:
    with sessions() as session:
        return list(session.scalars(select(Upload).where(Upload.tenant == tenant)))


# --- a commit that fails --------------------------------------------------------------------

_SQLITE_BREAKER = [
    "CREATE TABLE commit_breaker_parent (id TEXT PRIMARY KEY)",
    "CREATE TABLE commit_breaker (upload_id TEXT PRIMARY KEY, parent TEXT "
    "REFERENCES commit_breaker_parent (id) DEFERRABLE INITIALLY DEFERRED)",
    "CREATE TRIGGER break_commit AFTER INSERT ON uploads WHEN NEW.tenant = '{tenant}' "
    "BEGIN INSERT INTO commit_breaker VALUES (NEW.id, 'missing'); END",
]
_POSTGRES_BREAKER = [
    "CREATE TABLE commit_breaker_parent (id text PRIMARY KEY)",
    "CREATE TABLE commit_breaker (upload_id text PRIMARY KEY, parent text "
    "REFERENCES commit_breaker_parent (id) DEFERRABLE INITIALLY DEFERRED)",
    "CREATE FUNCTION break_commit() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN INSERT INTO commit_breaker VALUES (NEW.id, 'missing'); RETURN NEW; END $$",
    "CREATE TRIGGER break_commit AFTER INSERT ON uploads FOR EACH ROW WHEN (NEW.tenant = '{tenant}') "
    "EXECUTE FUNCTION break_commit()",
]
_UNBREAK = {
    "sqlite": ["DROP TRIGGER break_commit", "DROP TABLE commit_breaker", "DROP TABLE commit_breaker_parent"],
    "postgresql": [
        "DROP TRIGGER break_commit ON uploads", "DROP FUNCTION break_commit()",
        "DROP TABLE commit_breaker", "DROP TABLE commit_breaker_parent",
    ],
}


def execute(sessions: sessionmaker[Session], statements: list[str]) -> None:
    with sessions() as session:
        for statement in statements:
            session.execute(text(statement))
        session.commit()


@pytest.fixture
def broken_commits(streaming: LiveServer) -> Iterator[Client]:
    """A tenant whose uploads' transactions fail at COMMIT: each upload row inserts a row that
    breaks a deferred foreign key, checked only when the transaction commits (a real commit
    failure of the database, on both engines)."""
    client = streaming.client()
    dialect = streaming.sessions.kw["bind"].dialect.name
    breaker = _SQLITE_BREAKER if dialect == "sqlite" else _POSTGRES_BREAKER
    execute(streaming.sessions, [s.format(tenant=client.tenant) for s in breaker])
    try:
        yield client
    finally:
        execute(streaming.sessions, _UNBREAK[dialect])


def test_a_batch_whose_commit_fails_answers_503_to_all_and_leaves_nothing(
    streaming: LiveServer, broken_commits: Client, s3: Any
) -> None:
    client = broken_commits
    small = [samples.png_bytes(40 + i, 30) for i in range(10)]
    large = [b"%PDF-1.4\n" + os.urandom(PART + 1024 * 1024) for _ in range(2)]  # multipart originals

    def send(index: int) -> httpx.Response:
        if index < len(small):
            return client.upload(small[index], f"f{index}.png", "image/png")
        data = large[index - len(small)]
        return client.request(
            "POST", "/v1/uploads", params={"filename": "big.pdf"}, content=data,
            headers={"Content-Type": "application/pdf"},
        )

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(send, range(len(small) + len(large))))
    for response in responses:
        assert_error(response, 503, "DEPENDENCY_UNAVAILABLE")
        assert response.headers["retry-after"]
    assert tenant_rows(streaming.sessions, client.tenant) == []
    bucket = streaming.settings.storage.originals_bucket
    assert streaming.store.list_keys(bucket, f"{client.tenant}/") == []
    assert multipart_uploads(s3, streaming, client) == []
    with streaming.sessions() as session:
        tenant_events = select(func.count()).where(
            AuditEventRow.tenant == client.tenant, AuditEventRow.action == "upload:accepted"
        )
        assert session.scalar(tenant_events) == 0
        assert verify_chain(session, client.tenant) == []
    # The writer goes on: another tenant's upload in the same process commits.
    assert streaming.client().upload(small[0], "ok.png", "image/png").status_code == 202


# --- a crash in the middle of a run ----------------------------------------------------------


def test_a_sigkill_during_concurrent_uploads_leaves_only_complete_uploads(streaming: LiveServer) -> None:
    client = streaming.client()
    answered: dict[str, str] = {}  # upload id -> sha256, for every 202 received before the kill
    lock = threading.Lock()
    stop = threading.Event()

    def uploader(worker: int) -> None:
        count = 0
        with httpx.Client(base_url=streaming.url, headers=client.headers, timeout=30) as http:
            while not stop.is_set():
                data = samples.png_bytes(20 + worker, 20 + count % 50)
                count += 1
                try:
                    response = http.post("/v1/uploads", files={"file": ("a.png", data, "image/png")})
                except httpx.HTTPError:
                    return  # the process is gone
                if response.status_code == 202:
                    with lock:
                        answered[response.json()["id"]] = hashlib.sha256(data).hexdigest()

    threads = [threading.Thread(target=uploader, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(answered) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    streaming.process.kill()  # SIGKILL, uploads in flight
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answered) >= 40
    bucket = streaming.settings.storage.originals_bucket
    rows = {row.id: row for row in tenant_rows(streaming.sessions, client.tenant)}
    for upload_id, sha256 in answered.items():
        assert upload_id in rows, "a 202 answered before the kill lost its row"
        assert rows[upload_id].sha256 == sha256
        assert accepted_events(streaming.sessions, upload_id) == 1
    stored = set(streaming.store.list_keys(bucket, f"{client.tenant}/"))
    for row in rows.values():  # answered or not: no row without its original, none without its event
        assert keys.original_key(client.tenant, row.id) in stored, "a row without its object"
        assert accepted_events(streaming.sessions, row.id) == 1
    with streaming.sessions() as session:
        assert verify_chain(session, client.tenant) == []
    # Originals stored by requests that never got their row are swept by the next start.
    restarted = restart(streaming)
    try:
        rows = {row.id for row in tenant_rows(streaming.sessions, client.tenant)}
        assert wait_until(lambda: dead_ledgers(streaming) == []), "the dead process's ledger was not swept"
        stored_ids = {key.split("/")[1] for key in streaming.store.list_keys(bucket, f"{client.tenant}/")}
        assert stored_ids == rows, "an original without its row was left behind"
    finally:
        restarted.stop()


def test_the_next_start_removes_originals_a_dead_process_stored_without_their_rows(
    streaming: LiveServer,
) -> None:
    """A ledger as a process killed between an original's PUT and its row's commit leaves it:
    the next API process to start deletes that original, keeps the recorded one, drops the ledger."""
    client = streaming.client()
    recorded = client.accepted(samples.png_bytes(), "kept.png", content_type="image/png")
    bucket = streaming.settings.storage.originals_bucket
    orphan_id = "f" * 32
    orphan_key = keys.original_key(client.tenant, orphan_id)
    recorded_key = keys.original_key(client.tenant, recorded)
    streaming.store.put_bytes(bucket, orphan_key, b"x", content_type="image/png", sha256=hashlib.sha256(b"x").hexdigest())
    streaming.process.stop()
    ledger = ledger_dir(streaming) / "pending-originals-999999-0123456789ab.log"
    ledger.write_text(f"{recorded} {recorded_key}\n{orphan_id} {orphan_key}\n")
    restarted = restart(streaming)
    try:
        assert wait_until(lambda: not ledger.exists())
        assert set(streaming.store.list_keys(bucket, f"{client.tenant}/")) == {recorded_key}
        assert client.upload_count() == 1
    finally:
        restarted.stop()


def ledger_dir(server: LiveServer) -> Path:
    return server.settings.audit.journal_path.parent / "pending-originals"


def dead_ledgers(server: LiveServer) -> list[str]:
    """Ledgers of processes other than a living API (their pid is gone)."""
    return [p.name for p in ledger_dir(server).glob("pending-originals-*.log") if not pid_alive(int(p.name.split("-")[2]))]


def restart(server: LiveServer) -> ManagedProcess:
    """Another API process on the same settings (same journal directory, bucket and DB)."""
    process, _url = start_api(server.settings, server.log_path.parent / f"restart-{time.monotonic_ns()}")
    return process


# --- several processes, one tenant -----------------------------------------------------------


def test_two_api_processes_writing_one_tenant_keep_one_intact_chain(
    server: LiveServer, server_factory: Callable[..., LiveServer]
) -> None:
    sibling = server_factory()
    client = server.client()  # its key works on both processes (one database)
    processes = [server, sibling]

    def send(index: int) -> str:
        url = processes[index % 2].url
        data = samples.png_bytes(30 + index % 40, 24)
        response = httpx.post(
            url + "/v1/uploads", headers=client.headers, files={"file": ("a.png", data, "image/png")}, timeout=60
        )
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    with ThreadPoolExecutor(24) as pool:
        ids = list(pool.map(send, range(160)))
    assert len(set(ids)) == 160
    with server.sessions() as session:
        assert verify_chain(session, client.tenant) == []
        rows = session.execute(
            select(AuditEventRow.upload_id, func.count())
            .where(AuditEventRow.tenant == client.tenant, AuditEventRow.action == "upload:accepted")
            .group_by(AuditEventRow.upload_id)
        ).all()
    assert {upload_id: count for upload_id, count in rows} == dict.fromkeys(ids, 1)


# --- racing Idempotency-Keys in one batch ----------------------------------------------------


def test_racing_requests_with_one_idempotency_key_make_one_upload_and_fail_nobody_else(
    server: LiveServer,
) -> None:
    client = server.client()
    same = samples.png_bytes(50, 50)
    others = [samples.png_bytes(60 + i, 20) for i in range(8)]

    def send(index: int) -> httpx.Response:
        if index % 2:
            return client.upload(others[index // 2], "other.png", "image/png")
        return client.upload(same, "same.png", "image/png", headers={"Idempotency-Key": "race-1"})

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(send, range(16)))
    assert [r.status_code for r in responses] == [202] * 16, [r.text for r in responses if r.status_code != 202]
    racing = [r for i, r in enumerate(responses) if i % 2 == 0]
    assert len({r.json()["id"] for r in racing}) == 1
    assert sum(1 for r in racing if "idempotent-replayed" not in r.headers) == 1
    rows = tenant_rows(server.sessions, client.tenant)
    assert len(rows) == 1 + len(others)
    bucket = server.settings.storage.originals_bucket
    assert sorted(server.store.list_keys(bucket, f"{client.tenant}/")) == sorted(
        keys.original_key(client.tenant, row.id) for row in rows
    )  # the losers' originals are gone
    for row in rows:
        assert accepted_events(server.sessions, row.id) >= 1
