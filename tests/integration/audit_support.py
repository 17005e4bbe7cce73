"""Fixtures for the audit tests: a freshly migrated database per test, on SQLite and on
PostgreSQL (a schema of its own inside the session's throw-away database), and a database that
is really not there."""

from __future__ import annotations

import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from upload_service.audit import AuditAction, AuditEvent
from upload_service.db.audit_models import AuditEventRow
from upload_service.db.engine import build_engine, build_sessionmaker
from upload_service.db.migrate import upgrade_to_head
from upload_service.settings import DatabaseSettings


@pytest.fixture
def audit_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A database at the latest revision, empty, for this test alone."""
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/audit.db"
        upgrade_to_head(DatabaseSettings(url=url))
        yield url
        return
    import psycopg

    schema = f"audit_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{database_url}?options=-csearch_path%3D{schema}"
    try:
        upgrade_to_head(DatabaseSettings(url=url))
        yield url
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def sessions(audit_url: str) -> Iterator[sessionmaker[Session]]:
    engine = build_engine(DatabaseSettings(url=audit_url))
    yield build_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def dead_sessions(database_url: str, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """Sessions on a database that can't be reached: for SQLite a file in a directory that no
    longer exists, for PostgreSQL a port nothing listens on."""
    if database_url.startswith("sqlite"):
        gone = tmp_path / "gone"
        gone.mkdir()
        shutil.rmtree(gone)
        url = f"sqlite:///{gone}/audit.db"
    else:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        url = f"postgresql://postgres@127.0.0.1:{port}/nowhere?connect_timeout=2"
    engine = build_engine(DatabaseSettings(url=url))
    yield build_sessionmaker(engine)
    engine.dispose()


def make_event(tenant: str | None = "acme", action: AuditAction = AuditAction.UPLOAD_ACCEPTED, **fields: object) -> AuditEvent:
    defaults: dict[str, object] = {"outcome": "success", "request_id": f"req-{uuid.uuid4().hex[:12]}", "size": 10}
    defaults.update(fields)
    return AuditEvent(action=action, tenant=tenant, **defaults)  # type: ignore[arg-type]


def stored_rows(sessions: sessionmaker[Session], chain: str | None = None) -> list[AuditEventRow]:
    with sessions() as session:
        statement = select(AuditEventRow).order_by(AuditEventRow.id)
        if chain is not None:
            statement = statement.where(AuditEventRow.chain == chain)
        return list(session.scalars(statement))
