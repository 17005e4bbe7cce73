"""A real database outage: audit events go to the journal, and come back exactly once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from tests import samples
from tests.fixtures.app import LiveServer
from tests.fixtures.database import _admin_connect
from tests.integration.contract import assert_error
from upload_service.db.audit_models import AuditEventRow


def set_connections_allowed(database: str, allowed: bool) -> None:
    with _admin_connect() as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))


@pytest.fixture
def outage(server: LiveServer) -> Iterator[str]:
    """Takes the API's PostgreSQL database away (no connections allowed, existing ones killed)."""
    url = server.settings.database.url
    if not url.startswith("postgresql"):
        pytest.skip("a real outage needs the PostgreSQL server: a SQLite file can't be taken away from an open connection")
    database = url.rsplit("/", 1)[1]
    set_connections_allowed(database, False)
    try:
        yield database
    finally:
        set_connections_allowed(database, True)


def test_events_survive_a_database_outage_exactly_once(server: LiveServer, outage: str) -> None:
    journal = server.settings.audit.journal_path
    request_ids = [f"outage-{uuid.uuid4().hex}" for _ in range(3)]
    for request_id in request_ids:
        response = httpx.post(
            server.url + "/v1/uploads",
            content=samples.png_bytes(),
            headers={"Content-Type": "image/png", "X-Request-ID": request_id, "Authorization": "Bearer usk_0123456789abcdef_" + "x" * 43},
            timeout=30,
        )
        assert_error(response, 503, "DEPENDENCY_UNAVAILABLE")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = journal.read_text() if journal.exists() else ""
        if all(r in text for r in request_ids):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the events never reached the journal")
    assert journal.stat().st_mode & 0o777 == 0o600
    failures = httpx.get(server.url + "/metrics").text
    assert 'upload_audit_write_failures_total{action="auth:failed"}' in failures

    set_connections_allowed(outage, True)
    deadline = time.monotonic() + 20
    rows: list[AuditEventRow] = []
    while time.monotonic() < deadline:
        with server.sessions() as session:
            rows = list(session.scalars(select(AuditEventRow).where(AuditEventRow.request_id.in_(request_ids))))
        if len(rows) >= 3 and not any(r in (journal.read_text() if journal.exists() else "") for r in request_ids):
            break
        time.sleep(0.2)
    time.sleep(1.5)  # another replay round must not add anything
    with server.sessions() as session:
        rows = list(session.scalars(select(AuditEventRow).where(AuditEventRow.request_id.in_(request_ids))))
    assert sorted(r.request_id for r in rows) == sorted(request_ids)
    assert {(r.action, r.error_code) for r in rows} == {("auth:failed", "DEPENDENCY_UNAVAILABLE")}
    assert "upload_audit_journal_backlog 0.0" in httpx.get(server.url + "/metrics").text
