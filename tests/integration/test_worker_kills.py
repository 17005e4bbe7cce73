"""A work-horse SIGKILLed at each point between its claim and its last write never loses the
terminal audit event, nor writes it twice: status changes and their events commit together.

Each case holds the real RQ work-horse of a real ``upload-service worker`` process at a fail
point, checks that the held process is the worker's forked child, SIGKILLs it, and lets RQ's
retry (or the reconciler) finish the job. Afterwards the upload is ``done`` (or ``failed``),
its terminal event exists exactly once, and the tenant's hash chain verifies."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.fixtures.workers import run_jobs_in_process, wait_for_status
from tests.integration.workerfaults import (
    FailPoints,
    assert_chain_verifies,
    audit_actions,
    kill_work_horse,
    parent_pid,
    stored_keys,
)
from upload_service.db import repository
from upload_service.db.engine import session_scope
from upload_service.devstack.process import ManagedProcess
from upload_service.jobqueue import JobQueue, connect
from upload_service.media import kind_of

#: Every point between the claim and the last write; "pipeline" is killed while it runs.
POINTS = ["claimed", "pipeline", "artifacts_stored", "manifest_stored", "finished"]




def kill_at(
    server: LiveServer, client: Client, worker: ManagedProcess, failpoints: FailPoints, upload_id: str, point: str
) -> None:
    if point == "pipeline":
        # Held in the pipeline's sandboxed child, whose parent is the work-horse: killing the
        # work-horse there is a kill while the pipeline runs (the child dies with it).
        child = failpoints.wait_held(upload_id, "in_pipeline", worker)
        assert stored_keys(server, client, upload_id)["artifacts"] == []
        kill_work_horse(worker, parent_pid(child))
        assert stored_keys(server, client, upload_id)["artifacts"] == []
        return
    horse = failpoints.wait_held(upload_id, point, worker)
    kill_work_horse(worker, horse)


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_a_work_horse_killed_at_each_point_loses_no_terminal_event(
    server: LiveServer,
    client: Client,
    worker_process: Callable[[], ManagedProcess],
    failpoints: FailPoints,
    point: str,
) -> None:
    upload_id = client.accepted(samples.jpeg_bytes(800, 600), "photo.jpg")
    failpoints.arm(upload_id, "in_pipeline" if point == "pipeline" else point)
    worker = worker_process()
    kill_at(server, client, worker, failpoints, upload_id, point)
    record = wait_for_status(client, upload_id, {"done", "failed"}, timeout=120)
    assert record["status"] == "done", record
    keys = stored_keys(server, client, upload_id)["artifacts"]
    assert sorted(keys) == sorted(a["key"] for a in record["artifacts"])
    assert f"{client.tenant}/{upload_id}/manifest.json" in keys
    actions = audit_actions(server, upload_id)
    assert actions.count("processing:done") == 1, actions
    assert "processing:failed" not in actions, actions
    # A kill before the terminal commit means another claim (another processing:started); a
    # loaded machine can add one more (a run over its time budget is retried).
    assert actions.count("processing:started") >= (1 if point == "finished" else 2), actions
    assert_chain_verifies(server, client.tenant)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["claimed", "finished"])
def test_a_failing_file_killed_at_its_claim_or_its_end_is_failed_once(
    server: LiveServer,
    client: Client,
    worker_process: Callable[[], ManagedProcess],
    failpoints: FailPoints,
    point: str,
) -> None:
    upload_id = client.accepted(samples.truncated_pdf_bytes(), "broken.pdf")
    failpoints.arm(upload_id, point)
    worker = worker_process()
    kill_at(server, client, worker, failpoints, upload_id, point)
    record = wait_for_status(client, upload_id, {"done", "failed"}, timeout=120)
    assert record["status"] == "failed" and record["error"]["code"] == "PDF_CORRUPT", record
    actions = audit_actions(server, upload_id)
    assert actions.count("processing:failed") == 1, actions
    assert "processing:done" not in actions, actions
    assert_chain_verifies(server, client.tenant)


def test_a_terminal_upload_without_its_event_gets_it_once(server: LiveServer, client: Client) -> None:
    """Rows left by a run from before status and event shared a transaction: the next run of the
    job finds the upload done without ``processing:done`` and writes it, once."""
    upload_id = client.accepted(samples.png_bytes(), "a.png")
    with session_scope(server.sessions) as session:
        repository.set_status(session, upload_id, "done")  # as if killed between status and event
    queue = JobQueue(connect(server.settings.redis), server.settings.queue)
    for _ in range(2):
        queue.drop_job(upload_id)
        queue.enqueue_processing(upload_id, kind_of("image/png"))
        run_jobs_in_process(server)
    actions = audit_actions(server, upload_id)
    assert actions.count("processing:done") == 1, actions
    assert "processing:started" not in actions
    assert_chain_verifies(server, client.tenant)
