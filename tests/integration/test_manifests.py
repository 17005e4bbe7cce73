"""Every terminal outcome writes ``manifest.json``: done (after its artifacts) and failed (the
error, no artifacts), both valid against docs/manifest.schema.json, produced by a real worker
against the real S3 server; and the documented consumer (docs/examples/consume_manifest.py)
verifies them, and catches an artifact whose bytes changed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.fixtures.services import S3Service
from tests.fixtures.workers import run_jobs_in_process, wait_for_status
from upload_service.db import repository
from upload_service.db.engine import session_scope
from upload_service.jobqueue import JobQueue, connect
from upload_service.media import kind_of

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "manifest.schema.json").read_text())
CONSUMER = ROOT / "docs" / "examples" / "consume_manifest.py"




def manifest_key(client: Client, upload_id: str) -> str:
    return f"{client.tenant}/{upload_id}/manifest.json"


def stored_manifest(server: LiveServer, client: Client, upload_id: str) -> dict[str, Any]:
    data = server.store.get_bytes(server.settings.storage.artifacts_bucket, manifest_key(client, upload_id))
    return json.loads(data)  # type: ignore[no-any-return]


def validate(manifest: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    validator.validate(manifest)


def test_the_schema_is_a_valid_draft_2020_12_schema_and_refuses_mixed_outcomes() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    failed = {
        "version": 1, "upload_id": "0" * 32, "tenant": "acme", "source": {"sha256": "0" * 64, "type": "image/png"},
        "created_at": "2026-11-30T06:00:00+00:00", "status": "failed", "error": {"code": "X", "message": "m"},
        "artifacts": [], "info": {},
    }
    validate(failed)
    artifact = {"name": "info.json", "key": "acme/x/info.json", "size": 1, "type": "application/json", "sha256": "0" * 64}
    for wrong in ({"artifacts": [artifact]}, {"error": None}, {"status": "done"}, {"status": "deleting"}):
        with pytest.raises(jsonschema.ValidationError):
            validate({**failed, **wrong})


def test_done_and_failed_manifests_from_a_real_worker_validate(server: LiveServer, client: Client) -> None:
    done_id = client.accepted(samples.png_bytes(40, 30), "ok.png")
    corrupt_id = client.accepted(samples.truncated_pdf_bytes(), "broken.pdf")
    bomb_id = client.accepted(samples.png_bomb_bytes(30000), "bomb.png")
    run_jobs_in_process(server)

    record = wait_for_status(client, done_id, {"done"}, timeout=10)
    done = stored_manifest(server, client, done_id)
    validate(done)
    assert done["status"] == "done" and done["error"] is None
    listed = {a["name"]: a for a in done["artifacts"]}
    assert listed == {a["name"]: a for a in record["artifacts"] if a["name"] != "manifest.json"}
    assert done["source"] == {"sha256": record["sha256"], "type": "image/png"}

    for upload_id, code in ((corrupt_id, "PDF_CORRUPT"), (bomb_id, "IMAGE_TOO_MANY_PIXELS")):
        record = wait_for_status(client, upload_id, {"failed"}, timeout=10)
        failed = stored_manifest(server, client, upload_id)
        validate(failed)
        assert failed["status"] == "failed" and failed["artifacts"] == [] and failed["info"] == {}
        assert failed["error"] == record["error"] and record["error"]["code"] == code
        assert (failed["upload_id"], failed["tenant"]) == (upload_id, client.tenant)
        assert failed["source"]["sha256"] == record["sha256"]
        # The API record keeps no artifacts; the manifest is the only object under the prefix.
        assert record["artifacts"] == []
        keys = server.store.list_keys(server.settings.storage.artifacts_bucket, f"{client.tenant}/{upload_id}/")
        assert keys == [manifest_key(client, upload_id)]


def test_a_file_that_keeps_crashing_workers_gets_a_failed_manifest(server: LiveServer, client: Client) -> None:
    upload_id = client.accepted(samples.png_bytes(), "a.png")
    with session_scope(server.sessions) as session:
        # As if max_crashes - 1 runs had died mid-job already, and the latest one too.
        repository.set_status(session, upload_id, "processing")
        row = repository.get_upload_any_tenant(session, upload_id)
        assert row is not None
        row.attempts = server.settings.queue.max_crashes - 1
    run_jobs_in_process(server)
    record = wait_for_status(client, upload_id, {"failed"}, timeout=10)
    manifest = stored_manifest(server, client, upload_id)
    validate(manifest)
    assert manifest["error"] == record["error"] and record["error"]["code"] == "PROCESSING_CRASHED"


def test_a_missing_original_and_exhausted_retries_get_failed_manifests(server: LiveServer, client: Client) -> None:
    missing = client.accepted(samples.png_bytes(), "gone.png")
    flaky = client.accepted(samples.png_bytes(9, 9), "flaky.png")
    originals = server.settings.storage.originals_bucket
    server.store.delete(originals, f"{client.tenant}/{missing}/original")
    # A stored original that no longer matches its checksum is a transient fault: with a single
    # immediate retry (no intervals) both runs meet it and the upload ends PROCESSING_UNAVAILABLE.
    server.store.put_bytes(originals, f"{client.tenant}/{flaky}/original", b"other bytes", content_type="image/png",
                           sha256=hashlib.sha256(b"other bytes").hexdigest())
    queue = JobQueue(connect(server.settings.redis), server.settings.queue.model_copy(update={"retry_intervals_seconds": []}))
    queue.drop_job(flaky)
    queue.enqueue_processing(flaky, kind_of("image/png"))
    run_jobs_in_process(server)
    for upload_id, code in ((missing, "ORIGINAL_MISSING"), (flaky, "PROCESSING_UNAVAILABLE")):
        record = wait_for_status(client, upload_id, {"failed"}, timeout=10)
        manifest = stored_manifest(server, client, upload_id)
        validate(manifest)
        assert manifest["error"] == record["error"] and record["error"]["code"] == code


def test_deleting_a_failed_upload_removes_its_manifest(server: LiveServer, client: Client) -> None:
    upload_id = client.accepted(samples.truncated_pdf_bytes(), "broken.pdf")
    run_jobs_in_process(server)
    wait_for_status(client, upload_id, {"failed"}, timeout=10)
    assert client.request("DELETE", f"/v1/uploads/{upload_id}").status_code == 204
    assert server.store.list_keys(server.settings.storage.artifacts_bucket, f"{client.tenant}/{upload_id}/") == []


def notification(bucket: str, keys: list[str]) -> dict[str, Any]:
    """An S3 event notification as AWS delivers it (the fields a consumer reads), keys URL-encoded."""
    return {"Records": [
        {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
         "s3": {"s3SchemaVersion": "1.0", "configurationId": "manifests",
                "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                "object": {"key": key, "size": 1, "sequencer": "0"}}}
        for key in keys
    ] + [{"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": bucket}, "object": {"key": keys[0]}}}]}


def run_consumer(s3: S3Service, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_ENDPOINT_URL": s3.endpoint_url, "AWS_DEFAULT_REGION": "us-east-1",
    }
    return subprocess.run(
        [sys.executable, str(CONSUMER), *args], input=stdin, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_documented_consumer_verifies_real_manifests(
    server: LiveServer, client: Client, s3_service: S3Service, tmp_path: Path
) -> None:
    done_id = client.accepted(samples.jpeg_bytes(50, 40), "photo.jpg")
    failed_id = client.accepted(samples.truncated_pdf_bytes(), "broken.pdf")
    run_jobs_in_process(server)
    wait_for_status(client, done_id, {"done"}, timeout=10)
    wait_for_status(client, failed_id, {"failed"}, timeout=10)
    bucket = server.settings.storage.artifacts_bucket
    event = tmp_path / "event.json"
    event.write_text(json.dumps(notification(bucket, [manifest_key(client, done_id), manifest_key(client, failed_id)])))

    result = run_consumer(s3_service, "--event", str(event))
    assert result.returncode == 0, result.stderr
    done, failed = (json.loads(line) for line in result.stdout.splitlines())
    assert done["upload_id"] == done_id and done["status"] == "done"
    assert set(done["verified"]) == {"info.json", "sanitized.jpg", "thumb-256.webp", "thumb-1024.webp"}
    assert failed == {
        "bucket": bucket, "key": manifest_key(client, failed_id), "upload_id": failed_id, "status": "failed",
        "error": client.request("GET", f"/v1/uploads/{failed_id}").json()["error"], "verified": [],
    }

    # One changed byte in an artifact: the consumer says which, and exits 1.
    thumb = f"{client.tenant}/{done_id}/thumb-256.webp"
    data = bytearray(server.store.get_bytes(bucket, thumb))
    data[-1] ^= 0xFF
    server.store.put_bytes(bucket, thumb, bytes(data), content_type="image/webp", sha256=hashlib.sha256(data).hexdigest())
    result = run_consumer(s3_service, "--bucket", bucket, manifest_key(client, done_id))
    assert result.returncode == 1 and "MISMATCH" in result.stderr and "thumb-256.webp" in result.stderr
    assert result.stdout == ""
