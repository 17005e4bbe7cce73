"""Audit events for every decision, metrics that move, request ids in worker logs, and
admission control — against the real API, worker, Redis, S3 and database."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from tests import rawhttp as raw
from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.fixtures.workers import run_jobs_in_process, wait_for_status
from tests.integration.contract import assert_error, new_request_id
from tests.fixtures.audit import request_audit_rows


@pytest.fixture
def client(server: LiveServer) -> Client:
    return server.client(scopes="upload,read,admin")




def test_every_upload_decision_is_one_audit_event(server: LiveServer, client: Client) -> None:
    cases = [
        (lambda h: client.upload(samples.png_bytes(), "a.png", headers=h), 202, "upload:accepted", None),
        (lambda h: client.upload(samples.html_bytes(), "a.png", "image/png", headers=h), 415, "upload:rejected", "UNSUPPORTED_MEDIA_TYPE"),
        (lambda h: client.upload(b"", "a.png", headers=h), 400, "upload:rejected", "EMPTY_FILE"),
        (lambda h: client.request("POST", "/v1/uploads", content=samples.png_bytes() + b"\0" * (21 * 1024 * 1024),
                                  headers={**h, "Content-Type": "image/png"}), 413, "upload:rejected", "FILE_TOO_LARGE"),
        (lambda h: httpx.post(server.url + "/v1/uploads", content=b"x", headers={**h, "Authorization": "Bearer nope"}),
         401, "auth:failed", "UNAUTHENTICATED"),
    ]
    for send, status, action, code in cases:
        request_id = new_request_id()
        response = send({"X-Request-ID": request_id})
        assert response.status_code == status, response.text
        rows = request_audit_rows(server.sessions, request_id)
        time.sleep(0.1)
        rows = request_audit_rows(server.sessions, request_id)
        assert len(rows) == 1, [(r.action, r.error_code) for r in rows]
        row = rows[0]
        assert (row.action, row.error_code) == (action, code)
        assert row.outcome == ("success" if status == 202 else "failure")
        assert row.client_addr == "127.0.0.1"
        if status == 202:
            record = response.json()
            assert (row.upload_id, row.sha256, row.size, row.tenant) == (record["id"], record["sha256"], record["size"], client.tenant)
            assert row.key_id == client.key.split("_")[1] and client.key not in str(row.details)
        elif status != 401:
            assert row.tenant == client.tenant
    assert server.spool_entries() == []


def test_other_decisions_and_worker_outcomes_are_audited(server: LiveServer, client: Client) -> None:
    upload_rid = new_request_id()
    upload_id = client.upload(samples.png_bytes(), "a.png", headers={"X-Request-ID": upload_rid}).json()["id"]
    bomb_rid = new_request_id()
    bomb_id = client.upload(samples.png_bomb_bytes(20000), "b.png", headers={"X-Request-ID": bomb_rid}).json()["id"]
    run_jobs_in_process(server)
    wait_for_status(client, upload_id, {"done"}, timeout=5)
    actions = [r.action for r in request_audit_rows(server.sessions, upload_rid, expect=3)]
    assert actions == ["upload:accepted", "processing:started", "processing:done"]
    bomb = request_audit_rows(server.sessions, bomb_rid, expect=3)
    assert [(r.action, r.error_code) for r in bomb][-1] == ("processing:failed", "IMAGE_TOO_MANY_PIXELS")

    for method, path, kwargs, action in (
        ("PATCH", f"/v1/uploads/{upload_id}", {"json": {"tags": ["a"]}}, "upload:metadata_changed"),
        ("GET", f"/v1/uploads/{upload_id}/artifacts/info.json", {"follow_redirects": False}, "artifact:url_issued"),
        ("DELETE", f"/v1/uploads/{upload_id}", {}, "upload:deleted"),
    ):
        request_id = new_request_id()
        assert client.request(method, path, headers={"X-Request-ID": request_id}, **kwargs).status_code < 400
        rows = request_audit_rows(server.sessions, request_id)
        assert [(r.action, r.upload_id) for r in rows] == [(action, upload_id)]
    reader = server.client(scopes="read", tenant=client.tenant)
    request_id = new_request_id()
    assert reader.request("DELETE", f"/v1/uploads/{bomb_id}", headers={"X-Request-ID": request_id}).status_code == 403
    assert [(r.action, r.error_code) for r in request_audit_rows(server.sessions, request_id)] == [("auth:failed", "FORBIDDEN")]


def test_audit_api_filters_and_pages(server: LiveServer, client: Client) -> None:
    ids = [client.upload(samples.png_bytes(), "a.png").json()["id"] for _ in range(5)]
    client.upload(samples.html_bytes(), "a.html")
    deadline = time.monotonic() + 5
    seen: list[dict] = []  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        seen, cursor = [], None
        while True:
            page = client.request("GET", "/v1/audit", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            seen += page["events"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        if len(seen) >= 6:
            break
        time.sleep(0.1)
    assert [e["upload_id"] for e in seen if e["action"] == "upload:accepted"] == ids
    assert len({e["event_id"] for e in seen}) == len(seen)
    rejected = client.request("GET", "/v1/audit", params={"action": "upload:rejected"}).json()["events"]
    assert [e["error_code"] for e in rejected] == ["UNSUPPORTED_MEDIA_TYPE"]
    one = client.request("GET", "/v1/audit", params={"upload_id": ids[2]}).json()["events"]
    assert [e["upload_id"] for e in one] == [ids[2]]
    assert all(e["tenant"] == client.tenant for e in seen)
    assert_error(client.request("GET", "/v1/audit", params={"tenant": "someone-else"}), 404, "NOT_FOUND")
    assert_error(server.client(scopes="upload,read").request("GET", "/v1/audit"), 403, "FORBIDDEN")
    other = server.client(scopes="admin")
    assert other.request("GET", "/v1/audit", params={"upload_id": ids[0]}).json()["events"] == []


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_move(server: LiveServer, client: Client) -> None:
    before = httpx.get(server.url + "/metrics").text
    client.upload(samples.png_bytes(), "a.png")
    client.upload(samples.png_bytes(), "b.png")
    client.upload(samples.html_bytes(), "a.png", "image/png")
    during = httpx.get(server.url + "/metrics")
    assert during.headers["content-type"].startswith("text/plain")
    after = during.text
    accepted = dict(name="upload_uploads_total", outcome="accepted", type="image/png")
    assert metric(after, **accepted) - metric(before, **accepted) == 2
    rejected = dict(name="upload_uploads_total", outcome="rejected", code="UNSUPPORTED_MEDIA_TYPE")
    assert metric(after, **rejected) - metric(before, **rejected) == 1
    assert metric(after, "upload_received_bytes_total") > metric(before, "upload_received_bytes_total")
    assert metric(after, "upload_ingest_duration_seconds_count") - metric(before, "upload_ingest_duration_seconds_count") == 3
    # The part after the last body byte: the accepted two only, each within its whole request.
    finished = metric(after, "upload_finish_duration_seconds_count") - metric(before, "upload_finish_duration_seconds_count")
    assert finished == 2
    finish_sum = metric(after, "upload_finish_duration_seconds_sum") - metric(before, "upload_finish_duration_seconds_sum")
    ingest_sum = metric(after, "upload_ingest_duration_seconds_sum") - metric(before, "upload_ingest_duration_seconds_sum")
    assert 0 < finish_sum < ingest_sum
    assert metric(after, "upload_queue_depth", queue="images") >= 2
    assert metric(after, "upload_queue_oldest_job_age_seconds", queue="images") >= 0
    assert metric(after, "upload_uploads_in_flight") == 0
    run_jobs_in_process(server)
    done = httpx.get(server.url + "/metrics").text
    assert metric(done, "upload_queue_depth", queue="images") == 0
    assert metric(done, "upload_jobs_total", kind="image", outcome="done") - metric(after, "upload_jobs_total", kind="image", outcome="done") >= 2
    assert metric(done, "upload_job_duration_seconds_count", kind="image") >= 2
    assert "upload_audit_journal_backlog 0.0" in done


def test_worker_log_lines_carry_the_request_id(server: LiveServer, client: Client, worker_process) -> None:  # type: ignore[no-untyped-def]
    request_id = new_request_id()
    upload_id = client.upload(samples.png_bytes(), "a.png", headers={"X-Request-ID": request_id}).json()["id"]
    process = worker_process()
    wait_for_status(client, upload_id, {"done"}, timeout=30)
    # The job's own lines (RQ's bookkeeping lines in the parent process name only the job id).
    lines = [line for line in process.log_path.read_text().splitlines() if upload_id in line and '"workers.jobs"' in line]
    assert len(lines) >= 2, process.log_path.read_text()[-2000:]
    assert all(f'"request_id": "{request_id}"' in line for line in lines), lines
    assert any('"msg": "processing done' in line for line in lines)
    assert all(f'"tenant": "{client.tenant}"' in line for line in lines)


def test_sigusr1_writes_the_worker_s_thread_stacks_to_its_log_and_it_works_on(  # type: ignore[no-untyped-def]
    server: LiveServer, client: Client, worker_process
) -> None:
    """How an operator finds where a job hangs: every thread's stack, the worker goes on."""
    process = worker_process()
    os.kill(process.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while "_reconcile_forever" not in process.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = process.log_path.read_text()
    assert "most recent call first" in log, log[-2000:]
    assert "_reconcile_forever" in log, log[-4000:]  # the reconciler thread's, not only the main thread's
    upload_id = client.upload(samples.png_bytes(), "a.png").json()["id"]
    wait_for_status(client, upload_id, {"done"}, timeout=30)


def test_full_spool_gets_507_before_the_body_is_read(server_factory) -> None:  # type: ignore[no-untyped-def]
    full = server_factory(spool={"min_free_bytes": 10**18})
    client = full.client()
    head = raw.head(
        "POST", "/v1/uploads",
        {"Authorization": f"Bearer {client.key}", "Content-Type": "image/png", "Content-Length": "1000000"},
    )
    with raw.connect(full.url, timeout=10) as sock:
        sock.sendall(head)  # and no body at all: the answer must not wait for it
        response = raw.read_response(sock)
    assert response is not None
    assert_error(response, 507, "INSUFFICIENT_STORAGE")
    assert int(response.headers["retry-after"]) > 0
    assert full.spool_entries() == []
    ready = httpx.get(full.url + "/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["spool"]["status"] == "fail"


def test_deep_queue_gets_503_with_retry_after(server_factory, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    """(``redis_url`` empties the queues first.)"""
    busy = server_factory(admission={"max_queue_depth": 1, "depth_cache_seconds": 0})
    client = busy.client()
    assert client.upload(samples.png_bytes(), "a.png").status_code == 202  # the queue now holds one job
    response = client.upload(samples.png_bytes(), "b.png")
    error = assert_error(response, 503, "DEPENDENCY_UNAVAILABLE")
    assert error["details"] == {"queues": ["images"]}
    assert int(response.headers["retry-after"]) > 0
    health = httpx.get(busy.url + "/health").json()  # queue depth is cluster-wide: not in /readyz
    assert health["checks"]["admission"]["status"] == "fail"
    assert httpx.get(busy.url + "/readyz").status_code == 200
    run_jobs_in_process(busy)
    assert client.upload(samples.png_bytes(), "c.png").status_code == 202
