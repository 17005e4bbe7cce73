"""``upload-service keys create|list|revoke`` as a user runs it, against a real database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from upload_service import auth
from upload_service.db.audit_models import AuditEventRow
from upload_service.db.engine import build_engine, build_sessionmaker
from upload_service.settings import DatabaseSettings


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "upload_service", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


def test_keys_lifecycle(database_url: str, tmp_path: Path) -> None:
    env = {"UPLOAD_DATABASE__URL": database_url, "UPLOAD_AUDIT__JOURNAL_PATH": str(tmp_path / "journal.jsonl")}
    assert cli(env, "migrate").returncode == 0
    created = cli(env, "keys", "create", "--tenant", "acme-1", "--scopes", "upload,read", "--label", "ci")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("usk_") and " " not in key
    engine = build_engine(DatabaseSettings(url=database_url))
    sessions = build_sessionmaker(engine)
    with sessions() as session:
        principal = auth.authenticate(session, f"Bearer {key}")
    assert principal.tenant == "acme-1"
    assert {s.value for s in principal.scopes} == {"upload", "read"}

    listing = cli(env, "keys", "list", "--tenant", "acme-1")
    assert principal.key_id in listing.stdout and key not in listing.stdout and "active" in listing.stdout
    assert cli(env, "keys", "revoke", principal.key_id).returncode == 0
    assert "revoked" in cli(env, "keys", "list", "--tenant", "acme-1").stdout
    with sessions() as session:
        actions = [r.action for r in session.scalars(select(AuditEventRow).where(AuditEventRow.key_id == principal.key_id))]
    assert actions == ["key:created", "key:revoked"]
    bad = cli(env, "keys", "create", "--tenant", "Bad Tenant!", "--scopes", "upload")
    assert bad.returncode == 2 and "tenant" in bad.stdout
    unknown_scope = cli(env, "keys", "create", "--tenant", "acme-1", "--scopes", "root")
    assert unknown_scope.returncode == 2
    engine.dispose()
