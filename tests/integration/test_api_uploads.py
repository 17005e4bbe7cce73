"""POST /v1/uploads through a real uvicorn: accepted bytes land in S3 and the DB; every rejection
answers the error contract and leaves nothing behind (no spool file, no record)."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.integration.contract import assert_error
from upload_service.storage import keys



def assert_nothing_left(server: LiveServer, client: Client) -> None:
    assert server.spool_entries() == []
    assert client.upload_count() == 0


def test_multipart_upload_is_stored_recorded_and_located(server: LiveServer, client: Client) -> None:
    data = samples.png_bytes(120, 80)
    response = client.upload(data, "holiday.png", "image/png", data={"metadata": json.dumps({"album": "x"})})
    assert response.status_code == 202, response.text
    record = response.json()
    assert response.headers["location"] == f"/v1/uploads/{record['id']}"
    assert record["filename"] == "holiday.png"
    assert record["size"] == len(data)
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["declared_type"] == "image/png"
    assert record["detected_type"] == "image/png"
    assert record["status"] == "queued"
    assert record["metadata"] == {"album": "x"}
    assert record["artifacts"] == [] and record["error"] is None
    stored = server.store.get_bytes(server.settings.storage.originals_bucket, keys.original_key(client.tenant, record["id"]))
    assert stored == data
    assert server.spool_entries() == []
    fetched = client.request("GET", response.headers["location"])
    assert fetched.status_code == 200
    assert fetched.json()["sha256"] == record["sha256"]


def test_raw_body_upload_with_filename_query(server: LiveServer, client: Client) -> None:
    data = samples.pdf_bytes()
    response = client.request(
        "POST", "/v1/uploads", params={"filename": "../../etc/report.PDF"}, content=data,
        headers={"Content-Type": "application/pdf"},
    )
    assert response.status_code == 202, response.text
    record = response.json()
    assert record["filename"] == "report.PDF"
    assert record["detected_type"] == "application/pdf"
    assert client.upload_count() == 1


@pytest.mark.parametrize(
    ("make", "filename", "declared", "code"),
    [
        (samples.html_bytes, "x.png", "image/png", "UNSUPPORTED_MEDIA_TYPE"),
        (samples.zip_bytes, "x.bin", "application/octet-stream", "UNSUPPORTED_MEDIA_TYPE"),
        (samples.elf_bytes, "x.bin", "application/octet-stream", "UNSUPPORTED_MEDIA_TYPE"),
        (samples.svg_bytes, "x.svg", "image/svg+xml", "UNSUPPORTED_MEDIA_TYPE"),
        (samples.jpeg_bytes, "x.png", "image/png", "CONTENT_TYPE_MISMATCH"),
        (samples.png_bytes, "x.pdf", "image/png", "EXTENSION_MISMATCH"),
    ],
)
def test_type_rejections(server: LiveServer, client: Client, make, filename: str, declared: str, code: str) -> None:  # type: ignore[no-untyped-def]
    response = client.upload(make(), filename, declared)
    error = assert_error(response, 415, code)
    assert error["details"]["detected_type"]
    assert_nothing_left(server, client)


def test_jpeg_aliases_and_octet_stream_are_accepted(server: LiveServer, client: Client) -> None:
    for declared in ("image/jpg", "image/pjpeg", "application/octet-stream"):
        assert client.upload(samples.jpeg_bytes(), "a.jpeg", declared).status_code == 202


def test_empty_file(server: LiveServer, client: Client) -> None:
    assert_error(client.upload(b"", "a.png", "image/png"), 400, "EMPTY_FILE")
    assert_nothing_left(server, client)


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\nabc", "multipart/form-data; boundary=x", "MALFORMED_MULTIPART"),
        (b"whatever", "multipart/form-data", "MALFORMED_MULTIPART"),
        (b"whatever", "multipart/form-data; boundary=" + "b" * 100, "MALFORMED_MULTIPART"),
        (b"--x\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{}\r\n--x--\r\n", "multipart/form-data; boundary=x", "MISSING_FILE"),
    ],
)
def test_multipart_rejections(server: LiveServer, client: Client, body: bytes, content_type, code: str) -> None:  # type: ignore[no-untyped-def]
    ct = content_type.decode() if isinstance(content_type, bytes) else content_type
    response = client.request("POST", "/v1/uploads", content=body, headers={"Content-Type": ct})
    assert_error(response, 400, code)
    assert_nothing_left(server, client)


def test_thousands_of_parts_fail_fast(server: LiveServer, client: Client) -> None:
    parts = b"".join(b"--x\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nv\r\n" % i for i in range(20_000))
    response = client.request(
        "POST", "/v1/uploads", content=parts + b"--x--\r\n", headers={"Content-Type": "multipart/form-data; boundary=x"}
    )
    assert_error(response, 400, "MALFORMED_MULTIPART")
    assert_nothing_left(server, client)


def test_two_file_parts(server: LiveServer, client: Client) -> None:
    png = samples.png_bytes()
    files = [("file", ("a.png", png, "image/png")), ("file", ("b.png", png, "image/png"))]
    assert_error(client.request("POST", "/v1/uploads", files=files), 400, "TOO_MANY_FILES")
    assert_nothing_left(server, client)


@pytest.mark.parametrize("metadata", ["{not json", "[1, 2]", "\"text\""])
def test_bad_metadata(server: LiveServer, client: Client, metadata: str) -> None:
    response = client.upload(samples.png_bytes(), "a.png", "image/png", data={"metadata": metadata})
    assert_error(response, 422, "VALIDATION_FAILED")
    assert_nothing_left(server, client)


def test_per_type_limit_applies_to_a_raw_content_length(server: LiveServer, client: Client) -> None:
    limit = server.settings.limits.max_image_bytes
    data = samples.png_bytes() + b"\0" * (limit + 1)
    response = client.request("POST", "/v1/uploads", content=data, headers={"Content-Type": "image/png"})
    error = assert_error(response, 413, "FILE_TOO_LARGE")
    assert error["details"]["limit_bytes"] == limit
    assert_nothing_left(server, client)


def test_per_type_limit_applies_once_a_multipart_type_is_known(server: LiveServer, client: Client) -> None:
    data = samples.png_bytes() + b"\0" * (server.settings.limits.max_image_bytes + 1)
    assert_error(client.upload(data, "big.png", "image/png"), 413, "FILE_TOO_LARGE")
    assert_nothing_left(server, client)


def test_idempotency_key(server: LiveServer, client: Client) -> None:
    data = samples.png_bytes(10, 10)
    first = client.upload(data, "a.png", headers={"Idempotency-Key": "order-42"})
    again = client.upload(data, "a.png", headers={"Idempotency-Key": "order-42"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    conflict = client.upload(samples.png_bytes(11, 11), "a.png", headers={"Idempotency-Key": "order-42"})
    error = assert_error(conflict, 409, "IDEMPOTENCY_CONFLICT")
    assert error["details"]["upload_id"] == first.json()["id"]
    assert client.upload_count() == 1
    other_tenant = server.client()
    assert other_tenant.upload(data, "a.png", headers={"Idempotency-Key": "order-42"}).json()["id"] != first.json()["id"]
    assert server.spool_entries() == []


def test_request_id_is_taken_from_the_request(server: LiveServer, client: Client) -> None:
    response = client.upload(samples.html_bytes(), "a.html", headers={"X-Request-ID": "edge-1234567890"})
    assert response.headers["x-request-id"] == "edge-1234567890"
    assert assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")["request_id"] == "edge-1234567890"
    invalid = client.upload(samples.html_bytes(), "a.html", headers={"X-Request-ID": "bad id with spaces"})
    assert invalid.headers["x-request-id"] != "bad id with spaces"


def test_upload_with_redis_down_is_still_accepted(server: LiveServer, client: Client, redis_service) -> None:  # type: ignore[no-untyped-def]
    redis_service.process.stop()
    try:
        response = client.upload(samples.png_bytes(), "a.png")
        assert response.status_code == 202
        assert response.json()["status"] == "queued"
        assert client.upload_count() == 1
    finally:
        redis_service.ensure_running()


def test_s3_down_refuses_with_503_and_leaves_nothing(server: LiveServer, client: Client, s3_service) -> None:  # type: ignore[no-untyped-def]
    s3_service.process.kill()
    try:
        response = client.upload(samples.png_bytes(), "a.png")
        error = assert_error(response, 503, "DEPENDENCY_UNAVAILABLE")
        assert "endpoint" not in error["message"].lower()
        assert response.headers["retry-after"]
        assert_nothing_left(server, client)
    finally:
        s3_service.ensure_running()


def test_unknown_route_and_wrong_method(server: LiveServer, client: Client) -> None:
    assert_error(client.request("GET", "/v1/nothing"), 404, "NOT_FOUND")
    assert_error(client.request("PUT", "/v1/uploads"), 405, "METHOD_NOT_ALLOWED")


def test_health_endpoints(server: LiveServer) -> None:
    """(Readiness under a Redis outage: tests/integration/test_probes.py.)"""
    assert httpx.get(server.url + "/livez").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ok", "checks": {"db": {"status": "ok"}, "spool": {"status": "ok"}}}
    checks = httpx.get(server.url + "/health").json()["checks"]
    assert {"db", "redis", "spool", "s3", "admission"} <= set(checks)
    assert all(c["latency_ms"] >= 0 for c in checks.values())


def test_invalid_idempotency_key_is_a_bad_request(server: LiveServer, client: Client) -> None:
    response = client.upload(samples.png_bytes(), "a.png", headers={"Idempotency-Key": "has spaces in it"})
    assert_error(response, 400, "BAD_REQUEST")
    assert_nothing_left(server, client)
