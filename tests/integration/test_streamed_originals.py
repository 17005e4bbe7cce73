"""The original streamed to S3 while the body arrives: bodies up to one part are one PUT, larger
ones a multipart upload whose parts go out as they fill. Whatever ends an upload early — a
disconnect, a body over its limit, S3 going away, a failing DB commit — leaves nothing behind:
no object, no row, and no multipart upload (``ListMultipartUploads``)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from tests import rawhttp as raw
from tests.fixtures.app import Client, LiveServer
from tests.fixtures.services import S3Service
from tests.integration.contract import assert_error, new_request_id
from tests.fixtures.audit import request_audit_rows
from tests.integration.leftovers import assert_nothing_left, multipart_uploads, wait_until

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part: the tests stream several parts quickly


def pdf_bytes(size: int) -> bytes:
    header = b"%PDF-1.4\n"
    return (header + os.urandom(max(0, size - len(header))))[:size]


@pytest.fixture
def streaming(server_factory: Callable[..., LiveServer]) -> LiveServer:
    """An API process whose originals go up in 5 MiB parts."""
    return server_factory(storage={"multipart_part_bytes": PART})


def head_of(client: Client, request_id: str, content_length: int | None) -> bytes:
    headers = {
        "Authorization": f"Bearer {client.key}",
        "Content-Type": "application/pdf",
        "X-Request-ID": request_id,
    }
    if content_length is None:
        headers["Transfer-Encoding"] = "chunked"
    else:
        headers["Content-Length"] = str(content_length)
    return raw.head("POST", "/v1/uploads?filename=big.pdf", headers)


def chunks(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


def test_streamed_originals_are_the_files_bytes_whatever_their_size(streaming: LiveServer, s3: Any) -> None:
    """Around the part size (and the smallest file the type sniff accepts — a 1-byte file is no
    PDF): the stored bytes and the recorded sha256 are the file's; up to one part is a single
    PUT (plain ETag, sha256 in its metadata), more is a multipart upload of ceil(size / part)
    parts; no multipart upload is left open."""
    client = streaming.client()
    bucket = streaming.settings.storage.originals_bucket
    for size in (9, PART - 1, PART, PART + 1, 3 * PART + PART // 2):
        data = pdf_bytes(size)
        response = client.request(
            "POST", "/v1/uploads", params={"filename": "f.pdf"}, content=chunks(data),
            headers={"Content-Type": "application/pdf"},
        )
        assert response.status_code == 202, (size, response.text)
        record = response.json()
        sha256 = hashlib.sha256(data).hexdigest()
        assert (record["size"], record["sha256"]) == (size, sha256)
        key = f"{client.tenant}/{record['id']}/original"
        assert key in streaming.store.list_keys(bucket, f"{client.tenant}/")
        stored = streaming.store.get_bytes(bucket, key)
        assert hashlib.sha256(stored).hexdigest() == sha256 and len(stored) == size
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        parts = -(-size // PART)
        if parts == 1:
            assert "-" not in etag, (size, etag)
            assert streaming.store.head(bucket, key).sha256 == sha256  # x-amz-meta-sha256
        else:
            assert etag.endswith(f"-{parts}"), (size, etag)
    assert multipart_uploads(s3, streaming, client) == []


def test_a_client_gone_mid_body_aborts_the_multipart_upload(streaming: LiveServer, s3: Any) -> None:
    client = streaming.client()
    request_id = new_request_id("gone")
    with raw.connect(streaming.url) as sock:
        sock.sendall(head_of(client, request_id, 40 * MiB))
        sock.sendall(pdf_bytes(3 * PART))
        # The multipart upload is under way while the body still streams.
        assert wait_until(lambda: len(multipart_uploads(s3, streaming, client)) == 1, timeout=10)
    assert_nothing_left(streaming, client, s3)
    rows = request_audit_rows(streaming.sessions, request_id)
    assert [(r.action, r.outcome) for r in rows] == [("upload:rejected", "failure")]


def send_in_background(sock: socket.socket, pieces: Iterator[bytes]) -> threading.Thread:
    def send() -> None:
        with contextlib.suppress(OSError):  # the server answered and closed meanwhile
            for piece in pieces:
                sock.sendall(piece)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return sender


def chunked(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    for piece in chunks(data, size):
        yield b"%x\r\n" % len(piece) + piece + b"\r\n"


def test_a_body_over_its_limit_after_several_parts_is_413_and_aborted(
    server_factory: Callable[..., LiveServer], s3: Any
) -> None:
    server = server_factory(storage={"multipart_part_bytes": PART}, limits={"max_pdf_bytes": 20 * MiB})
    client = server.client()
    request_id = new_request_id("over")
    body = pdf_bytes(30 * MiB)
    with raw.connect(server.url) as sock:
        sock.sendall(head_of(client, request_id, None))
        for piece in chunked(body[: 3 * PART]):
            sock.sendall(piece)

        def parts_sent() -> bool:
            uploads = multipart_uploads(s3, server, client)
            if len(uploads) != 1:
                return False
            listed = s3.list_parts(
                Bucket=server.settings.storage.originals_bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]
            )
            return len(listed.get("Parts", [])) >= 2

        assert wait_until(parts_sent, timeout=10)
        sender = send_in_background(sock, chunked(body[3 * PART :]))
        response = raw.read_response(sock)
        sender.join(timeout=30)
    assert response is not None
    assert_error(response, 413, "FILE_TOO_LARGE")
    assert_nothing_left(server, client, s3)
    rows = request_audit_rows(server.sessions, request_id)
    assert [(r.action, r.error_code) for r in rows] == [("upload:rejected", "FILE_TOO_LARGE")]


def test_s3_gone_mid_upload_is_503_and_leaves_nothing_once_it_is_back(
    streaming: LiveServer, s3: Any, s3_service: S3Service
) -> None:
    client = streaming.client()
    request_id = new_request_id("s3gone")
    body = pdf_bytes(40 * MiB)
    try:
        with raw.connect(streaming.url) as sock:
            sock.sendall(head_of(client, request_id, len(body)))
            sock.sendall(body[: 3 * PART])
            assert wait_until(lambda: len(multipart_uploads(s3, streaming, client)) == 1, timeout=10)
            s3_service.process.kill()
            sender = send_in_background(sock, chunks(body[3 * PART :]))
            response = raw.read_response(sock)
            sender.join(timeout=30)
        assert response is not None
        error = assert_error(response, 503, "DEPENDENCY_UNAVAILABLE")
        assert "endpoint" not in error["message"].lower()
        assert client.upload_count() == 0
    finally:
        s3_service.ensure_running()
    # The abort that failed while S3 was down is retried until it is back.
    assert_nothing_left(streaming, client, s3)


@contextlib.contextmanager
def failing_upload_inserts(server: LiveServer, tenant: str) -> Iterator[None]:
    """The DB refuses to insert uploads of ``tenant`` (a trigger), as a DB failing at commit."""
    with server.sessions() as session:
        dialect = session.get_bind().dialect.name
        if dialect == "sqlite":
            # A call of a function that does not exist: an OperationalError, as a DB failing
            # (RAISE() would be an IntegrityError, which the service reads as a duplicate).
            session.execute(text(
                f"CREATE TRIGGER refuse_{tenant} BEFORE INSERT ON uploads WHEN NEW.tenant = '{tenant}' "
                "BEGIN SELECT refused_by_test(); END"
            ))
        else:
            session.execute(text(
                f"CREATE FUNCTION refuse_{tenant}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF NEW.tenant = '{tenant}' THEN RAISE EXCEPTION 'refused by test'; END IF; "
                "RETURN NEW; END $$"
            ))
            session.execute(text(
                f"CREATE TRIGGER refuse_{tenant} BEFORE INSERT ON uploads FOR EACH ROW EXECUTE FUNCTION refuse_{tenant}()"
            ))
        session.commit()
    try:
        yield
    finally:
        with server.sessions() as session:
            if dialect == "sqlite":
                session.execute(text(f"DROP TRIGGER refuse_{tenant}"))
            else:
                session.execute(text(f"DROP TRIGGER refuse_{tenant} ON uploads"))
                session.execute(text(f"DROP FUNCTION refuse_{tenant}()"))
            session.commit()


def test_a_failing_db_commit_after_complete_is_503_and_deletes_the_object(streaming: LiveServer, s3: Any) -> None:
    client = streaming.client()
    request_id = new_request_id("dbfail")
    data = pdf_bytes(2 * PART + 123)
    with failing_upload_inserts(streaming, client.tenant):
        response = client.request(
            "POST", "/v1/uploads", params={"filename": "f.pdf"}, content=chunks(data),
            headers={"Content-Type": "application/pdf", "X-Request-ID": request_id},
        )
    assert_error(response, 503, "DEPENDENCY_UNAVAILABLE")
    assert_nothing_left(streaming, client, s3)
    rows = request_audit_rows(streaming.sessions, request_id)
    assert [(r.action, r.error_code) for r in rows] == [("upload:rejected", "DEPENDENCY_UNAVAILABLE")]


def test_a_200_mib_upload_keeps_the_api_memory_flat(server_factory: Callable[..., LiveServer], s3: Any) -> None:
    """Default parts (8 MiB, two in flight): the API holds at most three parts, whatever the size."""
    big = 300 * MiB
    server = server_factory(limits={"max_body_bytes": big, "max_pdf_bytes": big})
    client = server.client()
    size = 200 * MiB
    block = os.urandom(MiB)
    digest = hashlib.sha256(b"%PDF-1.4\n")
    for _ in range(size // MiB - 1):
        digest.update(block)
    tail = block[: MiB - 9]
    digest.update(tail)

    def body() -> Iterator[bytes]:
        yield b"%PDF-1.4\n"
        for _ in range(size // MiB - 1):
            for start in range(0, MiB, 256 * 1024):
                yield block[start : start + 256 * 1024]
        yield tail

    # Warm the process up (first-use imports and buffers), then measure the big one.
    assert client.request(
        "POST", "/v1/uploads", params={"filename": "w.pdf"}, content=pdf_bytes(20 * MiB),
        headers={"Content-Type": "application/pdf"},
    ).status_code == 202
    server.reset_peak_rss()
    before = server.proc_status("VmRSS")
    response = client.request(
        "POST", "/v1/uploads", params={"filename": "big.pdf"}, content=body(), headers={"Content-Type": "application/pdf"}
    )
    assert response.status_code == 202, response.text
    growth_kib = server.proc_status("VmHWM") - before
    assert response.json()["size"] == size
    assert response.json()["sha256"] == digest.hexdigest()
    assert growth_kib <= 32 * 1024, f"peak RSS grew by {growth_kib} KiB"
    assert multipart_uploads(s3, server, client) == []


def test_abandoned_writers_are_swept_and_writers_in_flight_kept(s3_service: S3Service, s3: Any, tmp_path: Any) -> None:
    """What a killed process leaves (an S3 multipart upload, a local temporary file) is removed
    by the start-up sweep once older than the bound; younger ones — uploads in flight — stay."""
    from upload_service.storage import build_object_store

    settings = s3_service.settings()
    store = build_object_store(settings)
    store.ensure_buckets()
    bucket = settings.originals_bucket
    old = store.open_writer(bucket, "t1/aaaa/original", content_type="application/pdf")
    try:
        _sweep_leaves_in_flight(old, store, s3, bucket, tmp_path)
    finally:
        # In a killed process its part's thread would die with it; here it must stop, or it
        # waits out the stall bound (5 minutes) and holds up the interpreter's exit.
        old.abort()


def _sweep_leaves_in_flight(old: Any, store: Any, s3: Any, bucket: str, tmp_path: Any) -> None:
    from upload_service.storage.local import LocalObjectStore

    old.write(pdf_bytes(9 * MiB))  # past one 8 MiB part: a multipart upload starts
    assert wait_until(lambda: len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1, timeout=10)
    local = LocalObjectStore(tmp_path / "objects", buckets=("originals-x", "artifacts-x"))
    local.ensure_buckets()
    local_old = local.open_writer("originals-x", "t1/aaaa/original", content_type="application/pdf")
    local_old.write(b"%PDF-1.4\n")
    time.sleep(2.5)
    young = local.open_writer("originals-x", "t1/bbbb/original", content_type="application/pdf")
    young.write(b"%PDF-1.4\n")
    in_flight = store.open_writer(bucket, "t1/bbbb/original", content_type="application/pdf")
    in_flight.write(pdf_bytes(9 * MiB))
    assert wait_until(lambda: len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 2, timeout=10)

    assert store.abort_stale_writes(bucket, older_than_seconds=1.5) == 1
    assert [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == ["t1/bbbb/original"]
    in_flight.abort()
    assert local.abort_stale_writes("originals-x", older_than_seconds=1.5) == 1
    left = [p.name for p in (tmp_path / "objects").rglob(".*.tmp")]
    assert len(left) == 1 and left[0].startswith(".original."), left
    young.commit(hashlib.sha256(b"%PDF-1.4\n").hexdigest())
    assert local.get_bytes("originals-x", "t1/bbbb/original") == b"%PDF-1.4\n"
    assert store.abort_stale_writes(bucket, older_than_seconds=0) == 0  # nothing else was open
