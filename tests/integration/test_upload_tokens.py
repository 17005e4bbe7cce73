"""Upload tokens through a real uvicorn: minted with an API key, uploading within their
narrowing, reading only their own uploads, used up atomically, refused when expired, tampered or
signed with a removed secret."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.integration.contract import assert_error
from upload_service.db.audit_models import AuditEventRow
from upload_service.db.models import Upload, UploadTokenUse



def mint(client: Client, **narrowing: Any) -> dict[str, Any]:
    response = client.request("POST", "/v1/upload-tokens", json=narrowing)
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


def holder(client: Client, token: str) -> Client:
    """Requests made with the token instead of the key."""
    return Client(client.server, token, client.tenant)


def audit_rows(server: LiveServer, tenant: str, action: str, count: int = 1, timeout: float = 10) -> list[AuditEventRow]:
    deadline = time.monotonic() + timeout
    while True:
        with server.sessions() as session:
            rows = list(
                session.scalars(
                    select(AuditEventRow).where(AuditEventRow.tenant == tenant, AuditEventRow.action == action)
                )
            )
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def rows_of_token(server: LiveServer, token_id: str) -> list[Upload]:
    with server.sessions() as session:
        return list(session.scalars(select(Upload).where(Upload.token_id == token_id)))


def test_a_one_shot_token_uploads_once_and_reads_only_what_it_made(server: LiveServer, client: Client) -> None:
    by_key = client.upload(samples.png_bytes(), "key.png").json()["id"]
    issued = mint(client)
    assert issued["token"].startswith("ust_test.") and issued["max_uploads"] == 1
    assert client.key not in issued["token"]
    page = holder(client, issued["token"])

    accepted = page.upload(samples.png_bytes(30, 20), "page.png")
    assert accepted.status_code == 202, accepted.text
    upload_id = accepted.json()["id"]
    (row,) = rows_of_token(server, issued["token_id"])
    assert row.id == upload_id and row.tenant == client.tenant and row.key_id == client.key.split("_")[1]

    assert page.request("GET", f"/v1/uploads/{upload_id}").json()["id"] == upload_id
    # Nothing else of the tenant: the key's upload is 404, as if it did not exist.
    assert_error(page.request("GET", f"/v1/uploads/{by_key}"), 404, "NOT_FOUND")
    assert_error(page.request("GET", f"/v1/uploads/{by_key}/artifacts/thumb_256.webp"), 404, "NOT_FOUND")
    # Read-only on its own upload, and no tokens from a token.
    assert_error(page.request("PATCH", f"/v1/uploads/{upload_id}", json={"tags": ["x"]}), 403, "FORBIDDEN")
    assert_error(page.request("DELETE", f"/v1/uploads/{upload_id}"), 403, "FORBIDDEN")
    assert_error(page.request("POST", "/v1/upload-tokens", json={}), 403, "FORBIDDEN")

    second = page.upload(samples.png_bytes(), "again.png")
    assert_error(second, 403, "FORBIDDEN")
    assert "used" in second.json()["error"]["message"]
    assert len(rows_of_token(server, issued["token_id"])) == 1
    assert server.wait_for_empty_spool() == []

    (issued_event,) = audit_rows(server, client.tenant, "token:issued")
    assert issued_event.details["token_id"] == issued["token_id"] and issued_event.key_id == client.key.split("_")[1]
    accepted_events = [r for r in audit_rows(server, client.tenant, "upload:accepted", 2) if r.upload_id == upload_id]
    assert accepted_events[0].details["token_id"] == issued["token_id"]
    refusals = audit_rows(server, client.tenant, "auth:failed", 4)
    assert {r.details.get("token_id") for r in refusals} == {issued["token_id"]}


def test_two_racing_uploads_with_a_one_shot_token_exactly_one_is_accepted(server: LiveServer, client: Client) -> None:
    data = samples.png_bytes(400, 300)
    for _ in range(5):
        issued = mint(client)
        page = holder(client, issued["token"])
        barrier = threading.Barrier(2)
        statuses: list[int] = []

        def send() -> None:
            barrier.wait()
            statuses.append(page.upload(data, "race.png").status_code)

        threads = [threading.Thread(target=send) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [202, 403]
        assert len(rows_of_token(server, issued["token_id"])) == 1
    assert server.wait_for_empty_spool() == []


def test_max_uploads_counts_accepted_uploads_only(server: LiveServer, client: Client) -> None:
    issued = mint(client, max_uploads=2, allowed_types=["image/png"])
    page = holder(client, issued["token"])
    # A refused upload gives its use back: a page can retry with the right file.
    assert_error(page.upload(samples.pdf_bytes(), "doc.pdf"), 415, "UNSUPPORTED_MEDIA_TYPE")
    first = page.upload(samples.png_bytes(), "a.png", headers={"Idempotency-Key": "page-1"})
    assert first.status_code == 202
    # A retry of the same upload (lost response) answers the earlier one and uses nothing.
    retry = page.upload(samples.png_bytes(), "a.png", headers={"Idempotency-Key": "page-1"})
    assert retry.status_code == 202 and retry.headers["idempotent-replayed"] == "true"
    assert page.upload(samples.png_bytes(10, 10), "b.png").status_code == 202
    assert_error(page.upload(samples.png_bytes(12, 12), "c.png"), 403, "FORBIDDEN")
    # Once used up, a retry of an upload it made still answers it.
    again = page.upload(samples.png_bytes(), "a.png", headers={"Idempotency-Key": "page-1"})
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert len(rows_of_token(server, issued["token_id"])) == 2
    with server.sessions() as session:
        assert session.get(UploadTokenUse, issued["token_id"]).uses == 2


def test_an_idempotency_key_of_another_client_is_a_conflict_not_a_leak(server: LiveServer, client: Client) -> None:
    data = samples.png_bytes()
    assert client.upload(data, "k.png", headers={"Idempotency-Key": "shared-key"}).status_code == 202
    page = holder(client, mint(client)["token"])
    error = assert_error(page.upload(data, "k.png", headers={"Idempotency-Key": "shared-key"}), 409, "IDEMPOTENCY_CONFLICT")
    assert error["details"] is None


def test_narrowing_type_and_size_are_enforced_by_the_ingest(server: LiveServer, client: Client) -> None:
    pdf_only = holder(client, mint(client, allowed_types=["application/pdf"])["token"])
    error = assert_error(pdf_only.upload(samples.png_bytes(), "a.png"), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert error["details"]["allowed_types"] == ["application/pdf"]

    small = holder(client, mint(client, max_bytes=1000)["token"])
    big = samples.noisy_jpeg_bytes(100, 100)
    assert len(big) > 1000
    error = assert_error(small.upload(big, "big.jpg"), 413, "FILE_TOO_LARGE")
    assert error["details"] == {"limit_bytes": 1000}
    # A raw body declaring its type is refused on its Content-Length, before any byte is read.
    raw = small.request("POST", "/v1/uploads", content=big, headers={"Content-Type": "image/jpeg"})
    assert_error(raw, 413, "FILE_TOO_LARGE")
    assert client.upload_count() == 0
    assert server.wait_for_empty_spool() == []
    tiny = samples.png_bytes(4, 4)
    assert len(tiny) <= 1000 and small.upload(tiny, "tiny.png").status_code == 202


def test_fixed_metadata_and_tags_win_over_the_clients(server: LiveServer, client: Client) -> None:
    page = holder(client, mint(client, metadata={"album": "fixed", "user": 42}, tags=["web"])["token"])
    response = page.upload(
        samples.png_bytes(), "a.png", data={"metadata": json.dumps({"album": "mine", "note": "hi"}), "user": "7"}
    )
    assert response.status_code == 202, response.text
    assert response.json()["metadata"] == {"album": "fixed", "user": 42, "note": "hi"}
    assert response.json()["tags"] == ["web"]


def _tamper(token: str, **changes: Any) -> str:
    head, payload, mac = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    encoded = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{head}.{encoded}.{mac}"


def test_expired_tampered_and_wrong_tenant_tokens_are_401(server: LiveServer, client: Client) -> None:
    other = server.client()
    token = mint(client, max_bytes=1000)["token"]
    forged = [
        _tamper(token, tenant=other.tenant),
        _tamper(token, exp=int(time.time()) + 3000),
        _tamper(token, max_bytes=10**7),
        _tamper(token, max_uploads=100),
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        token.replace("ust_test.", "ust_gone."),
    ]
    for bad in forged:
        page = holder(client, bad)
        assert_error(page.upload(samples.png_bytes(), "a.png"), 401, "UNAUTHENTICATED")
        assert_error(page.request("GET", "/v1/limits"), 401, "UNAUTHENTICATED")
    assert client.upload_count() == 0 and other.upload_count() == 0

    # A genuine token of one tenant never reaches another tenant's uploads.
    theirs = other.upload(samples.png_bytes(), "theirs.png").json()["id"]
    assert_error(holder(client, token).request("GET", f"/v1/uploads/{theirs}"), 404, "NOT_FOUND")

    short = holder(client, mint(client, ttl_seconds=1)["token"])
    time.sleep(2.1)
    error = assert_error(short.upload(samples.png_bytes(), "late.png"), 401, "UNAUTHENTICATED")
    assert error["message"] == "the upload token has expired"
    assert client.upload_count() == 0
    assert server.wait_for_empty_spool() == []


@pytest.mark.parametrize(
    "body", [{"ttl_seconds": 3601}, {"allowed_types": ["text/html"]}, {"max_uploads": 0}, {"nope": 1}, {"max_bytes": -1}]
)
def test_minting_validates_the_narrowing(client: Client, body: dict[str, Any]) -> None:
    assert_error(client.request("POST", "/v1/upload-tokens", json=body), 422, "VALIDATION_FAILED")


def test_minting_needs_the_upload_scope(server: LiveServer, client: Client) -> None:
    reader = server.client(scopes="read", tenant=client.tenant)
    assert_error(reader.request("POST", "/v1/upload-tokens", json={}), 403, "FORBIDDEN")
    assert_error(httpx.post(server.url + "/v1/upload-tokens", json={}), 401, "UNAUTHENTICATED")


def test_rotation_old_key_id_verifies_until_removed(server: LiveServer, server_factory: Any, client: Client) -> None:
    old, new = "o" * 40, "n" * 40
    before = server_factory(tokens={"secrets": {"old": old}})
    during = server_factory(tokens={"secrets": {"old": old, "new": new}, "active_key_id": "new"})
    after = server_factory(tokens={"secrets": {"new": new}})
    old_token = mint(Client(before, client.key, client.tenant), max_uploads=5)["token"]
    new_token = mint(Client(during, client.key, client.tenant), max_uploads=5)["token"]
    assert old_token.startswith("ust_old.") and new_token.startswith("ust_new.")
    assert Client(during, old_token, client.tenant).upload(samples.png_bytes(), "a.png").status_code == 202
    assert Client(after, new_token, client.tenant).upload(samples.png_bytes(), "b.png").status_code == 202
    assert_error(Client(after, old_token, client.tenant).upload(samples.png_bytes(), "c.png"), 401, "UNAUTHENTICATED")


def _serve(server: LiveServer, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("UPLOAD_")}
    settings_env = {k: v for k, v in server.settings.to_env().items() if not k.startswith("UPLOAD_TOKENS__")}
    return subprocess.run(
        [sys.executable, "-m", "upload_service", "serve", "--port", "1"],
        env={**base, **settings_env, **env}, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )


def test_the_api_refuses_to_start_without_a_strong_secret(server: LiveServer, tmp_path: Path) -> None:
    missing = _serve(server, tmp_path)
    assert missing.returncode != 0 and "no upload-token secret" in missing.stderr
    short = _serve(server, tmp_path, UPLOAD_TOKENS__SECRETS='{"k1": "too-short-a-secret"}')
    assert short.returncode == 2 and "shorter than 32 bytes" in short.stderr
    assert "too-short-a-secret" not in short.stderr + short.stdout


def test_rows_of_long_expired_tokens_are_deleted_on_a_first_use(server: LiveServer, client: Client) -> None:
    from datetime import datetime, timedelta, timezone

    from upload_service.db.engine import session_scope

    stale = "0" * 31 + "1"
    with session_scope(server.sessions) as session:
        session.merge(UploadTokenUse(token_id=stale, tenant=client.tenant, uses=1,
                                     expires_at=datetime.now(timezone.utc) - timedelta(days=1)))
    page = holder(client, mint(client)["token"])
    assert page.upload(samples.png_bytes(), "a.png").status_code == 202
    with server.sessions() as session:
        assert session.get(UploadTokenUse, stale) is None
