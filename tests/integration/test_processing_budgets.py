"""Per-file processing budgets through the whole stack: an upload to the real API, a real
``upload-service worker`` (forking RQ worker: the pipeline child forks from the work-horse),
PostgreSQL or SQLite, SeaweedFS. A decoder bomb ends ``failed`` after one attempt, within its
budget, with the exact code; a killed work-horse's scratch directory is gone at the next job."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import bombs, samples
from tests.fixtures.app import Client, LiveServer
from tests.fixtures.workers import run_jobs_in_process, wait_for_status
from tests.integration.workerfaults import audit_actions, wait_for_audit
from upload_service.devstack.process import ManagedProcess



@pytest.fixture
def budget_worker(server: LiveServer, worker_process: Callable[..., ManagedProcess]) -> Callable[..., ManagedProcess]:
    """Start real worker processes with some ``processing`` settings changed (``worker_process``:
    Redis emptied first, stopped after). Earlier tests' uploads must not come before this test's
    own and eat its wall-clock budget: the worker's reconciler leaves alone the uploads it finds
    queued without a job (theirs, in the session's database) unless an hour old."""

    def start(**processing: Any) -> ManagedProcess:
        return worker_process(server.settings.model_copy(
            update={
                "processing": server.settings.processing.model_copy(update=processing),
                "queue": server.settings.queue.model_copy(update={"reconcile_grace_seconds": 3600}),
            }
        ))

    return start


def child_usage(log_path: Path) -> list[dict[str, Any]]:
    """The ``pipeline child`` lines of a worker's JSON log (CPU and peak RSS of each file)."""
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "workers.sandbox"]



def test_scan_bomb_upload_fails_after_one_attempt_within_the_file_budget(
    server: LiveServer, client: Client, budget_worker  # type: ignore[no-untyped-def]
) -> None:
    worker = budget_worker()
    data = bombs.jpeg_scan_bomb(7000, 8_000)  # ~70 s of decoding unchecked (4 job timeouts)
    budget = server.settings.processing

    started = time.monotonic()
    upload_id = client.accepted(data, "bomb.jpg")
    record = wait_for_status(client, upload_id, {"failed"}, timeout=budget.max_wall_seconds_per_file)
    elapsed = time.monotonic() - started

    assert record["error"]["code"] == "IMAGE_TOO_COMPLEX"
    assert record["error"]["message"] and "/" not in record["error"]["message"]
    assert record["artifacts"] == []
    assert elapsed < budget.max_wall_seconds_per_file, elapsed
    actions = wait_for_audit(server, upload_id, "processing:failed")
    assert actions.count("processing:started") == 1 and actions.count("processing:failed") == 1
    time.sleep(2)  # the first retry interval: a transient verdict would have run again by now
    assert audit_actions(server, upload_id).count("processing:started") == 1
    assert client.request("GET", f"/v1/uploads/{upload_id}").json()["status"] == "failed"
    usage = child_usage(worker.log_path)
    assert usage, worker.log_tail()
    assert max(u["child_cpu_seconds"] for u in usage) <= budget.max_cpu_seconds_per_file
    assert max(u["child_rss_growth_bytes"] for u in usage) <= budget.max_memory_bytes_per_file
    assert max(u["child_cpu_seconds"] for u in usage) < 2 and max(u["child_rss_growth_bytes"] for u in usage) < 64 << 20


def test_a_bomb_past_the_scan_budget_is_stopped_by_the_cpu_budget_once(
    server: LiveServer, client: Client, budget_worker  # type: ignore[no-untyped-def]
) -> None:
    worker = budget_worker(max_jpeg_scans=bombs.CPU_BOMB_SCANS_ALLOWED, max_cpu_seconds_per_file=1)

    started = time.monotonic()
    upload_id = client.accepted(bombs.cpu_bomb(), "bomb.jpg")
    record = wait_for_status(client, upload_id, {"failed"}, timeout=server.settings.processing.max_wall_seconds_per_file)

    assert record["error"]["code"] == "PROCESSING_TIMEOUT"
    assert time.monotonic() - started < server.settings.processing.max_wall_seconds_per_file
    time.sleep(2)
    assert audit_actions(server, upload_id).count("processing:started") == 1
    assert max(u["child_cpu_seconds"] for u in child_usage(worker.log_path)) <= 2.1  # soft + 1 s hard


@pytest.mark.parametrize("canvas", [1000, 7000, 13000])
def test_gif_frame_outside_the_screen_fails_through_the_stack(
    server: LiveServer, client: Client, canvas: int
) -> None:
    upload_id = client.accepted(bombs.gif_frame_outside_screen(canvas), "tiny.gif")
    run_jobs_in_process(server)

    record = wait_for_status(client, upload_id, {"failed"}, timeout=5)

    assert record["error"]["code"] == "IMAGE_CORRUPT"
    assert client.request("GET", f"/v1/uploads/{upload_id}").status_code == 200


def test_a_killed_work_horse_leaves_no_scratch_directory_behind(
    server: LiveServer, client: Client, budget_worker, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    scratch = tmp_path / "scratch"
    first = budget_worker(scratch_dir=scratch)
    upload_id = client.accepted(samples.noisy_jpeg_bytes(6000, 4000), "big.jpg")
    deadline = time.monotonic() + 30
    while not list(scratch.glob("job-*/original")) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = list(scratch.glob("job-*"))
    assert len(left) == 1, left
    first.kill()  # SIGKILL the worker, its work-horse and the pipeline child
    assert left[0].exists()  # no cleanup ran: this is what used to stay in /tmp for good

    budget_worker(scratch_dir=scratch)
    assert wait_for_status(client, upload_id, {"done"}, timeout=90)["artifacts"]

    assert not left[0].exists()
    assert list(scratch.iterdir()) == []
