"""Holding a real RQ work-horse at a named point of a job (``workers.failpoints``), to SIGKILL
it exactly there or to let a DELETE happen first, and reading back what a user would check:
the objects under an upload's prefix in both buckets, its row, its audit events."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.fixtures.workers import run_jobs_in_process, wait_for_status
from tests.integration.contract import assert_error
from upload_service.audit import verify_chain
from upload_service.db import repository
from upload_service.db.audit_models import AuditEventRow
from upload_service.devstack.process import ManagedProcess


@dataclass
class FailPoints:
    directory: Path

    def arm(self, upload_id: str, name: str) -> None:
        (self.directory / f"{upload_id}.{name}.armed").touch()

    def wait_held(self, upload_id: str, name: str, worker: ManagedProcess, timeout: float = 90.0) -> int:
        """The pid of the process holding at the point, once one does; else the worker's log
        says why not (the job not taken, or ended before the point)."""
        held = self.directory / f"{upload_id}.{name}.held"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if held.exists():
                return int(held.read_text())
            time.sleep(0.02)
        raise AssertionError(
            f"no work-horse reached {name} of upload {upload_id} within {timeout} s; the worker's log:\n"
            + worker.log_tail(80)
        )

    def release(self, upload_id: str, name: str) -> None:
        (self.directory / f"{upload_id}.{name}.release").touch()


def parent_pid(pid: int) -> int:
    # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def kill_work_horse(worker: ManagedProcess, pid: int) -> None:
    """SIGKILL ``pid`` after checking it is the worker's work-horse (its forked child)."""
    assert worker.pid is not None and parent_pid(pid) == worker.pid, "the held process is not the worker's work-horse"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # the worker reaps it


NOTHING = {"originals": [], "artifacts": []}  # what stored_keys finds of an upload that is gone


def stored_keys(server: LiveServer, client: Client, upload_id: str) -> dict[str, list[str]]:
    prefix = f"{client.tenant}/{upload_id}/"
    storage = server.settings.storage
    return {
        "originals": server.store.list_keys(storage.originals_bucket, prefix),
        "artifacts": server.store.list_keys(storage.artifacts_bucket, prefix),
    }


def audit_actions(server: LiveServer, upload_id: str) -> list[str]:
    with server.sessions() as session:
        rows = session.scalars(select(AuditEventRow).where(AuditEventRow.upload_id == upload_id).order_by(AuditEventRow.id))
        return [row.action for row in rows]


def wait_for_audit(server: LiveServer, upload_id: str, action: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    actions = audit_actions(server, upload_id)
    while action not in actions and time.monotonic() < deadline:
        time.sleep(0.05)
        actions = audit_actions(server, upload_id)
    return actions


def assert_chain_verifies(server: LiveServer, tenant: str) -> None:
    with server.sessions() as session:
        assert verify_chain(session, tenant) == []


def delete_while_s3_is_down(server: LiveServer, client: Client, s3_service) -> str:  # type: ignore[no-untyped-def]
    """A processed upload whose DELETE failed halfway (``503``: S3 stopped after the row was
    marked); S3 is back when this returns."""
    upload_id = client.accepted(samples.png_bytes(), "a.png")
    run_jobs_in_process(server)
    wait_for_status(client, upload_id, {"done"}, timeout=5)
    s3_service.process.stop()
    try:
        assert_error(client.request("DELETE", f"/v1/uploads/{upload_id}"), 503, "DEPENDENCY_UNAVAILABLE")
    finally:
        s3_service.ensure_running()
    return upload_id


def row_of(server: LiveServer, upload_id: str):  # type: ignore[no-untyped-def]
    with server.sessions() as session:
        return repository.get_upload_any_tenant(session, upload_id)
