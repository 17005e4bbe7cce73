"""A DELETE racing a job leaves nothing, whatever the interleaving: a real worker process is
held at a precise point of the job (``workers.failpoints``) while the DELETE runs through the
API, then released; both buckets' prefixes, the row and the audit rows are checked after."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import select
from rq.job import Job, JobStatus

from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.integration.contract import assert_error
from tests.integration.leftovers import wait_until
from tests.integration.workerfaults import (
    NOTHING,
    FailPoints,
    assert_chain_verifies,
    audit_actions,
    delete_while_s3_is_down,
    kill_work_horse,
    row_of,
    stored_keys,
    wait_for_audit,
)
from upload_service.db import repository
from upload_service.db.engine import session_scope
from upload_service.devstack.process import ManagedProcess
from upload_service.db.audit_models import AuditEventRow
from upload_service.jobqueue import SERIALIZER, connect, job_id_for
from upload_service.cli.clients import CliClients
from upload_service.cli.reconcile import reconcile_once


def job_result(server: LiveServer, upload_id: str, timeout: float = 30.0) -> object:
    """The return value of the upload's job once it has finished."""
    redis = connect(server.settings.redis)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = Job.fetch(job_id_for(upload_id), connection=redis, serializer=SERIALIZER)
            if job.get_status() == JobStatus.FINISHED:
                return job.return_value()
            time.sleep(0.05)
        raise AssertionError(f"the job of {upload_id} did not finish: {job.get_status()}")
    finally:
        redis.close()


@pytest.mark.parametrize("point", ["before_pipeline", "before_store", "artifacts_stored", "manifest_stored"])
def test_a_delete_while_the_job_runs_leaves_nothing(
    server: LiveServer,
    client: Client,
    worker_process: Callable[[], ManagedProcess],
    failpoints: FailPoints,
    point: str,
) -> None:
    """The job is held at ``point`` while the whole DELETE runs (mark, objects, row), then goes
    on: it finds the upload gone before or after storing, or when committing ``done``, and
    removes what it stored (``before_store``: the artifacts land after the DELETE emptied the
    prefix — the orphans of the original defect)."""
    upload_id = client.accepted(samples.png_bytes(300, 200), "a.png")
    failpoints.arm(upload_id, point)
    worker = worker_process()
    failpoints.wait_held(upload_id, point, worker)
    assert client.request("DELETE", f"/v1/uploads/{upload_id}").status_code == 204
    assert stored_keys(server, client, upload_id) == NOTHING
    assert_error(client.request("GET", f"/v1/uploads/{upload_id}"), 404, "NOT_FOUND")
    failpoints.release(upload_id, point)
    assert job_result(server, upload_id) == "skipped"
    assert stored_keys(server, client, upload_id) == NOTHING
    assert row_of(server, upload_id) is None
    actions = wait_for_audit(server, upload_id, "upload:deleted")
    assert actions.count("upload:accepted") == 1
    assert actions.count("processing:started") == 1
    assert actions.count("upload:deleted") == 1
    assert "processing:done" not in actions and "processing:failed" not in actions
    assert_chain_verifies(server, client.tenant)


def test_a_job_that_finds_its_upload_being_deleted_removes_its_artifacts(
    server: LiveServer,
    client: Client,
    worker_process: Callable[[], ManagedProcess],
    failpoints: FailPoints,
) -> None:
    """A DELETE that has committed its mark but not yet removed anything (or failed halfway):
    the job sees ``deleting`` after storing, removes its artifacts and writes no manifest; the
    DELETE, run again (or the worker's reconciler, if it comes first), finishes."""
    upload_id = client.accepted(samples.png_bytes(300, 200), "a.png")
    failpoints.arm(upload_id, "artifacts_stored")
    worker = worker_process()
    failpoints.wait_held(upload_id, "artifacts_stored", worker)
    assert stored_keys(server, client, upload_id)["artifacts"], "the artifacts were stored before the mark"
    with session_scope(server.sessions) as session:
        assert repository.mark_deleting(session, upload_id)
    assert_error(client.request("GET", f"/v1/uploads/{upload_id}"), 404, "NOT_FOUND")
    assert_error(client.request("GET", f"/v1/uploads/{upload_id}/artifacts/info.json"), 404, "NOT_FOUND")
    assert_error(client.request("PATCH", f"/v1/uploads/{upload_id}", json={"tags": ["x"]}), 404, "NOT_FOUND")
    failpoints.release(upload_id, "artifacts_stored")
    assert job_result(server, upload_id) == "skipped"
    assert stored_keys(server, client, upload_id)["artifacts"] == []  # no manifest after the mark
    worker.stop(timeout=15)  # its reconciler finishes stale deletes too: take it out of the race
    if row_of(server, upload_id) is not None:
        assert client.request("DELETE", f"/v1/uploads/{upload_id}").status_code == 204
    assert stored_keys(server, client, upload_id) == NOTHING
    assert row_of(server, upload_id) is None
    actions = wait_for_audit(server, upload_id, "upload:deleted")
    assert actions.count("upload:deleted") == 1 and "processing:done" not in actions


def test_a_killed_run_that_stored_after_the_delete_is_cleaned_by_its_retry(
    server: LiveServer,
    client: Client,
    worker_process: Callable[[], ManagedProcess],
    failpoints: FailPoints,
) -> None:
    """The worst interleaving: the DELETE empties the prefix, the job then stores its artifacts
    and its work-horse is SIGKILLed before it can re-check. The retry finds no row; it finds the
    tenant in the ``processing:started`` event committed with the claim, and removes the prefix."""
    upload_id = client.accepted(samples.png_bytes(300, 200), "a.png")
    failpoints.arm(upload_id, "before_store")
    failpoints.arm(upload_id, "artifacts_stored")
    worker = worker_process()
    failpoints.wait_held(upload_id, "before_store", worker)
    assert client.request("DELETE", f"/v1/uploads/{upload_id}").status_code == 204
    failpoints.release(upload_id, "before_store")
    horse = failpoints.wait_held(upload_id, "artifacts_stored", worker)
    assert stored_keys(server, client, upload_id)["artifacts"], "orphans exist now"
    kill_work_horse(worker, horse)
    assert wait_until(lambda: stored_keys(server, client, upload_id) == NOTHING, 30), stored_keys(server, client, upload_id)
    assert row_of(server, upload_id) is None
    actions = audit_actions(server, upload_id)
    assert actions.count("upload:deleted") == 1 and "processing:done" not in actions
    assert_chain_verifies(server, client.tenant)


def test_a_delete_that_failed_halfway_is_finished_by_the_next_one(
    server: LiveServer, client: Client, s3_service  # type: ignore[no-untyped-def]
) -> None:
    upload_id = delete_while_s3_is_down(server, client, s3_service)
    row = row_of(server, upload_id)
    assert row is not None and row.status == "deleting"
    assert_error(client.request("GET", f"/v1/uploads/{upload_id}"), 404, "NOT_FOUND")
    assert stored_keys(server, client, upload_id)["originals"]  # nothing was removed yet
    assert client.request("DELETE", f"/v1/uploads/{upload_id}").status_code == 204
    assert stored_keys(server, client, upload_id) == NOTHING
    assert row_of(server, upload_id) is None
    assert_error(client.request("DELETE", f"/v1/uploads/{upload_id}"), 404, "NOT_FOUND")
    actions = wait_for_audit(server, upload_id, "upload:deleted")
    assert actions.count("upload:deleted") == 1


def test_a_delete_nobody_retries_is_finished_by_the_reconciler(
    server: LiveServer, client: Client, s3_service  # type: ignore[no-untyped-def]
) -> None:
    upload_id = delete_while_s3_is_down(server, client, s3_service)
    assert_error(client.request("GET", f"/v1/uploads/{upload_id}"), 404, "NOT_FOUND")
    time.sleep(server.settings.queue.reconcile_grace_seconds + 0.5)
    with CliClients(server.settings) as clients:  # as `upload-service reconcile` runs it
        assert upload_id in reconcile_once(clients).deleted
    assert stored_keys(server, client, upload_id) == NOTHING
    assert row_of(server, upload_id) is None
    with server.sessions() as session:
        rows = session.scalars(
            select(AuditEventRow).where(AuditEventRow.upload_id == upload_id, AuditEventRow.action == "upload:deleted")
        ).all()
        assert [row.details for row in rows] == [{"finished_by": "reconciler"}]
    assert_chain_verifies(server, client.tenant)
