"""``upload-service audit verify|export|replay`` through ``upload_service.cli.audit.run`` on real databases."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.audit import make_event, stored_rows
from upload_service.cli import audit as cli_audit
from upload_service.cli.clients import CliClients
from upload_service.audit import AuditAction, AuditWriter
from upload_service.settings import DatabaseSettings, Settings


def run(url: str, command: str, **options: object) -> int:
    settings = Settings(database=DatabaseSettings(url=url))
    defaults: dict[str, object] = {"tenant": None, "since": None, "until": None, "output": None, "journal": None}
    with CliClients(settings) as clients:
        return cli_audit.run(clients, argparse.Namespace(audit_command=command, **(defaults | options)))


@pytest.fixture
def filled(sessions: sessionmaker[Session], tmp_path: Path) -> AuditWriter:
    writer = AuditWriter(sessions, tmp_path / "journal.jsonl")
    for _ in range(3):
        writer.record(make_event("acme"))
    writer.record(make_event("globex"))
    writer.record(make_event(None, AuditAction.AUTH_FAILED, outcome="failure"))
    return writer


def test_verify_intact_then_broken(
    audit_url: str, filled: AuditWriter, sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(audit_url, "verify") == 0
    assert capsys.readouterr().out.strip() == "audit chain intact: 5 events"
    assert run(audit_url, "verify", tenant="acme") == 0
    assert capsys.readouterr().out.strip() == "audit chain intact: 3 events"

    with sessions() as session:
        session.execute(text("UPDATE audit_events SET client_addr = '198.51.100.1' WHERE chain = 'acme' AND seq = 3"))
        session.commit()
    assert run(audit_url, "verify") == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("audit chain broken: chain acme: altered at seq 3")
    assert run(audit_url, "verify", tenant="globex") == 0


def test_export_writes_json_lines(
    audit_url: str, filled: AuditWriter, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(audit_url, "export") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 5 and [line["id"] for line in lines] == sorted(line["id"] for line in lines)
    assert {"event_id", "action", "seq", "prev_hash", "hash", "occurred_at"} <= set(lines[0])

    target = tmp_path / "acme.jsonl"
    assert run(audit_url, "export", tenant="acme", output=str(target)) == 0
    assert [json.loads(line)["seq"] for line in target.read_text().splitlines()] == [1, 2, 3]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600

    assert run(audit_url, "export", tenant="-") == 0
    assert [json.loads(line)["action"] for line in capsys.readouterr().out.splitlines()] == ["auth:failed"]
    assert run(audit_url, "export", since="2999-01-01") == 0
    assert capsys.readouterr().out == ""
    assert run(audit_url, "export", until="2999-01-01T00:00:00+00:00") == 0
    assert len(capsys.readouterr().out.splitlines()) == 5


def test_bad_arguments_and_missing_database(audit_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(audit_url, "export", since="yesterday") == 2
    assert "--since" in capsys.readouterr().err
    assert run(f"sqlite:///{tmp_path}/never-migrated.db", "verify") == 2
    assert "not migrated" in capsys.readouterr().err


def test_replay_command(
    audit_url: str,
    dead_sessions: sessionmaker[Session],
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    journal = tmp_path / "journal.jsonl"
    down = AuditWriter(dead_sessions, journal, attempts=1)
    down.record(make_event())
    down.record(make_event())
    assert run(audit_url, "replay", journal=str(journal)) == 0
    assert capsys.readouterr().out.strip() == "replayed 2 audit events; 0 still waiting"
    assert len(stored_rows(sessions)) == 2
