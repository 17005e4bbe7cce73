"""Accepted uploads become sanitized artifacts in a real S3 server, processed by real RQ workers."""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable

import pikepdf
import pytest
from PIL import Image

from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.fixtures.workers import fetch, run_jobs_in_process, wait_for_status
from tests.integration.contract import assert_error
from tests.pdfcheck import findings
from upload_service.db.engine import session_scope
from upload_service.db import repository
from upload_service.devstack.process import ManagedProcess
from upload_service.cli.clients import CliClients
from upload_service.cli.reconcile import reconcile_once


@pytest.fixture
def client(server: LiveServer) -> Client:
    return server.client()


def upload(client: Client, data: bytes, filename: str) -> str:
    response = client.upload(data, filename)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def artifact_bytes(server: LiveServer, record: dict, name: str) -> bytes:  # type: ignore[type-arg]
    artifact = next(a for a in record["artifacts"] if a["name"] == name)
    return server.store.get_bytes(server.settings.storage.artifacts_bucket, artifact["key"])


def test_jpeg_with_gps_and_orientation_becomes_clean_upright_artifacts(server: LiveServer, client: Client) -> None:
    upload_id = upload(client, samples.jpeg_with_exif_gps_orientation6(80, 40), "phone.jpg")
    run_jobs_in_process(server)
    record = wait_for_status(client, upload_id, {"done"}, timeout=5)
    names = {a["name"] for a in record["artifacts"]}
    assert names == {"sanitized.jpg", "thumb-256.webp", "thumb-1024.webp", "info.json", "manifest.json"}
    for artifact in record["artifacts"]:
        assert artifact["key"] == f"{client.tenant}/{upload_id}/{artifact['name']}"
        data = artifact_bytes(server, record, artifact["name"])
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
        assert len(data) == artifact["size"]
        for marker in (b"Exif", b"GPS", b"xmpmeta", b"http://ns.adobe.com/xap"):
            assert marker not in data, (artifact["name"], marker)
    sanitized = Image.open(io.BytesIO(artifact_bytes(server, record, "sanitized.jpg")))
    assert sanitized.size == (40, 80)  # orientation 6 applied: rotated upright
    assert not sanitized.getexif()
    for size in (256, 1024):
        thumb = Image.open(io.BytesIO(artifact_bytes(server, record, f"thumb-{size}.webp")))
        assert thumb.format == "WEBP" and max(thumb.size) <= size
    manifest = json.loads(artifact_bytes(server, record, "manifest.json"))
    listed = {a["name"]: a for a in manifest["artifacts"]}
    assert set(listed) == names - {"manifest.json"}
    for name, entry in listed.items():
        assert hashlib.sha256(artifact_bytes(server, record, name)).hexdigest() == entry["sha256"]
    info = json.loads(artifact_bytes(server, record, "info.json"))
    assert (info["width"], info["height"]) == (40, 80)
    assert "gps" in info["removed_metadata"] or "exif" in info["removed_metadata"]


def test_running_a_job_twice_gives_the_same_artifacts(server: LiveServer, client: Client) -> None:
    from upload_service.jobqueue import JobQueue, connect
    from upload_service.media import kind_of

    upload_id = upload(client, samples.png_bytes(300, 200), "a.png")
    run_jobs_in_process(server)
    first = wait_for_status(client, upload_id, {"done"}, timeout=5)
    with session_scope(server.sessions) as session:
        repository.set_status(session, upload_id, "queued")
    queue = JobQueue(connect(server.settings.redis), server.settings.queue)
    queue.drop_job(upload_id)
    queue.enqueue_processing(upload_id, kind_of("image/png"))
    run_jobs_in_process(server)
    second = wait_for_status(client, upload_id, {"done"}, timeout=5)
    assert [(a["name"], a["key"], a["sha256"]) for a in second["artifacts"]] == [
        (a["name"], a["key"], a["sha256"]) for a in first["artifacts"]
    ]
    listed = server.store.list_keys(server.settings.storage.artifacts_bucket, f"{client.tenant}/{upload_id}/")
    assert sorted(listed) == sorted(a["key"] for a in first["artifacts"])


def test_png_bomb_fails_and_the_worker_goes_on(server: LiveServer, client: Client) -> None:
    bomb = upload(client, samples.png_bomb_bytes(30000), "bomb.png")
    fine = upload(client, samples.png_bytes(), "fine.png")
    run_jobs_in_process(server)
    failed = wait_for_status(client, bomb, {"failed"}, timeout=5)
    assert failed["error"]["code"] == "IMAGE_TOO_MANY_PIXELS"
    assert failed["artifacts"] == []
    assert wait_for_status(client, fine, {"done"}, timeout=5)["artifacts"]


def test_pdf_active_content_is_removed(server: LiveServer, client: Client) -> None:
    original = samples.pdf_with_active_content()
    with pikepdf.open(io.BytesIO(original)) as pdf:
        assert findings(pdf), "the sample must carry active content for this test to mean anything"
    upload_id = upload(client, original, "active.pdf")
    run_jobs_in_process(server)
    record = wait_for_status(client, upload_id, {"done"}, timeout=10)
    names = {a["name"] for a in record["artifacts"]}
    assert {"sanitized.pdf", "thumb-256.webp", "info.json", "manifest.json"} <= names
    # The stored artifact, every object of it, against the allow-list (not a list of bad keys).
    with pikepdf.open(io.BytesIO(artifact_bytes(server, record, "sanitized.pdf"))) as pdf:
        assert findings(pdf) == []
    info = json.loads(artifact_bytes(server, record, "info.json"))
    removed = " ".join(info["removed"])
    for expected in ("OpenAction", "Launch", "EmbeddedFiles", "JavaScript"):
        assert expected in removed, info["removed"]
    thumb = Image.open(io.BytesIO(artifact_bytes(server, record, "thumb-256.webp")))
    assert thumb.format == "WEBP" and max(thumb.size) == 256


@pytest.mark.parametrize(
    ("make", "code"), [(samples.encrypted_pdf_bytes, "PDF_ENCRYPTED"), (samples.truncated_pdf_bytes, "PDF_CORRUPT")]
)
def test_bad_pdfs_fail_with_clear_codes(server: LiveServer, client: Client, make, code: str) -> None:  # type: ignore[no-untyped-def]
    upload_id = upload(client, make(), "bad.pdf")
    run_jobs_in_process(server)
    record = wait_for_status(client, upload_id, {"failed"}, timeout=5)
    assert record["error"]["code"] == code
    assert record["error"]["message"]


def test_presigned_artifact_url(server: LiveServer, client: Client) -> None:
    upload_id = upload(client, samples.png_bytes(), "a.png")
    run_jobs_in_process(server)
    record = wait_for_status(client, upload_id, {"done"}, timeout=5)
    response = client.request("GET", f"/v1/uploads/{upload_id}/artifacts/thumb-256.webp", follow_redirects=False)
    assert response.status_code == 307
    url = response.headers["location"]
    fetched = fetch(url)
    assert fetched.status_code == 200
    assert hashlib.sha256(fetched.content).hexdigest() == next(
        a["sha256"] for a in record["artifacts"] if a["name"] == "thumb-256.webp"
    )
    assert_error(client.request("GET", f"/v1/uploads/{upload_id}/artifacts/nope.bin"), 404, "NOT_FOUND")
    assert_error(server.client().request("GET", f"/v1/uploads/{upload_id}/artifacts/thumb-256.webp"), 404, "NOT_FOUND")
    time.sleep(server.settings.storage.presign_ttl_seconds + 1.5)
    assert fetch(url).status_code == 403


def test_delete_removes_original_and_artifacts(server: LiveServer, client: Client) -> None:
    upload_id = upload(client, samples.png_bytes(), "a.png")
    run_jobs_in_process(server)
    wait_for_status(client, upload_id, {"done"}, timeout=5)
    url = client.request("GET", f"/v1/uploads/{upload_id}/artifacts/info.json", follow_redirects=False).headers["location"]
    assert fetch(url).status_code == 200
    assert client.request("DELETE", f"/v1/uploads/{upload_id}").status_code == 204
    prefix = f"{client.tenant}/{upload_id}/"
    assert server.store.list_keys(server.settings.storage.artifacts_bucket, prefix) == []
    assert server.store.list_keys(server.settings.storage.originals_bucket, prefix) == []
    assert fetch(url).status_code == 404


def test_redis_down_at_accept_time_is_reconciled(server: LiveServer, client: Client, redis_service) -> None:  # type: ignore[no-untyped-def]
    redis_service.process.stop()
    try:
        upload_id = upload(client, samples.png_bytes(), "a.png")
    finally:
        redis_service.ensure_running()
    run_jobs_in_process(server)
    assert wait_for_status(client, upload_id, {"queued"}, timeout=1)["status"] == "queued"  # no job was there
    time.sleep(server.settings.queue.reconcile_grace_seconds + 0.5)
    with CliClients(server.settings) as clients:  # as `upload-service reconcile` runs it
        report = reconcile_once(clients)
    assert upload_id in report.enqueued
    run_jobs_in_process(server)
    assert wait_for_status(client, upload_id, {"done"}, timeout=5)["artifacts"]


@pytest.mark.slow
def test_worker_killed_mid_job_does_not_lose_the_job(
    server: LiveServer, client: Client, worker_process: Callable[[], ManagedProcess]
) -> None:
    upload_id = upload(client, samples.noisy_jpeg_bytes(6000, 4000), "big.jpg")
    first = worker_process()
    wait_for_status(client, upload_id, {"processing"}, timeout=20)
    first.kill()  # SIGKILL to the worker's process group: the worker and its work-horse
    assert wait_for_status(client, upload_id, {"processing"}, timeout=1)["status"] == "processing"
    worker_process()
    record = wait_for_status(client, upload_id, {"done"}, timeout=90)
    assert {a["name"] for a in record["artifacts"]} >= {"sanitized.jpg", "manifest.json"}


@pytest.mark.slow
def test_s3_down_during_a_job_is_retried_until_done(
    server: LiveServer, client: Client, s3_service, worker_process: Callable[[], ManagedProcess]  # type: ignore[no-untyped-def]
) -> None:
    upload_id = upload(client, samples.png_bytes(), "a.png")
    s3_service.process.stop()
    try:
        worker_process()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with server.sessions() as session:
                row = repository.get_upload_any_tenant(session, upload_id)
                assert row is not None
                if row.status == "queued" and "transient failure" in worker_log_text(server):
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("the worker never met the S3 outage")
    finally:
        s3_service.ensure_running()
    assert wait_for_status(client, upload_id, {"done"}, timeout=60)["artifacts"]


def worker_log_text(server: LiveServer) -> str:
    return "".join(p.read_text(errors="replace") for p in server.log_path.parent.parent.glob("**/worker*.log"))


def test_a_file_that_keeps_crashing_workers_ends_failed(server: LiveServer, client: Client) -> None:
    upload_id = upload(client, samples.png_bytes(), "a.png")
    with session_scope(server.sessions) as session:
        # As if max_crashes - 1 runs had died mid-job already, and the latest one too.
        repository.set_status(session, upload_id, "processing")
        row = repository.get_upload_any_tenant(session, upload_id)
        assert row is not None
        row.attempts = server.settings.queue.max_crashes - 1
    run_jobs_in_process(server)
    record = wait_for_status(client, upload_id, {"failed"}, timeout=5)
    assert record["error"]["code"] == "PROCESSING_CRASHED"


def test_an_original_changed_in_the_store_is_not_processed(server: LiveServer, client: Client) -> None:
    """A worker checks the original it reads against the sha256 the API recorded: other bytes
    under the original's key (a valid image too, which would otherwise be processed) make no
    artifact, and the upload goes back to the queue for a retry."""
    upload_id = upload(client, samples.png_bytes(color=(10, 200, 10)), "a.png")
    with server.sessions() as session:
        row = repository.get_upload_any_tenant(session, upload_id)
        assert row is not None
        key = row.original_key
    other = samples.png_bytes(color=(200, 10, 10))
    server.store.put_bytes(
        server.settings.storage.originals_bucket, key, other, content_type="image/png",
        sha256=hashlib.sha256(other).hexdigest(),
    )
    run_jobs_in_process(server)
    record = client.request("GET", f"/v1/uploads/{upload_id}").json()
    assert record["status"] == "queued"  # to be retried, not done
    assert record["artifacts"] == []
    prefix = f"{client.tenant}/{upload_id}/"
    assert server.store.list_keys(server.settings.storage.artifacts_bucket, prefix) == []
    # Nothing left for later tests' workers: deleted, its scheduled retry finds no upload and skips.
    assert client.request("DELETE", f"/v1/uploads/{upload_id}").status_code == 204
    assert server.store.list_keys(server.settings.storage.originals_bucket, prefix) == []
