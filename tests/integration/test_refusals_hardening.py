"""Refusals stay refusals: a hostile request gets its 4xx in the error contract and its audit
row, never a 500 — long paths with every kind of bad key, deeply nested JSON in the form field
and in PATCH bodies, over-long declared types (SQLite and PostgreSQL), bodies that trickle."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from sqlalchemy import select

from tests import rawhttp as raw
from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.integration.contract import assert_error, new_request_id
from tests.fixtures.audit import request_audit_rows
from upload_service import auth
from upload_service.db.engine import session_scope
from upload_service.db.models import ApiKey, Upload

PATH_BYTES = [4 * 1024 + 100, 12 * 1024]




def assert_left_nothing(server: LiveServer, client: Client) -> None:
    """No spool file, no row, no object under the tenant's prefix in either bucket."""
    assert server.wait_for_empty_spool() == []
    assert client.upload_count() == 0
    for bucket in (server.settings.storage.originals_bucket, server.settings.storage.artifacts_bucket):
        assert server.store.list_keys(bucket, f"{client.tenant}/") == []


def revoked_client(server: LiveServer) -> Client:
    client = server.client()
    with session_scope(server.sessions) as session:
        key = session.scalars(select(ApiKey).where(ApiKey.tenant == client.tenant)).one()
        auth.revoke_key(session, key.id)
    return client


# --- a long path with each kind of bad key: 401/403 and an auth:failed row, never a 500 --------


@pytest.mark.parametrize("path_bytes", PATH_BYTES)
@pytest.mark.parametrize("kind", ["missing", "malformed", "unknown", "revoked", "under-scoped"])
def test_a_long_path_with_a_bad_key_is_refused_and_audited(server: LiveServer, kind: str, path_bytes: int) -> None:
    path = "/v1/uploads/" + "a" * path_bytes
    headers = {"X-Request-ID": new_request_id("longpath")}
    if kind == "malformed":
        headers["Authorization"] = "Bearer nope"
    elif kind == "unknown":
        headers["Authorization"] = f"Bearer {server.client().key[:-6]}AAAAAA"
    elif kind == "revoked":
        headers["Authorization"] = f"Bearer {revoked_client(server).key}"
    elif kind == "under-scoped":
        headers["Authorization"] = f"Bearer {server.client(scopes='upload').key}"  # no read scope
    response = httpx.get(server.url + path, headers=headers, timeout=30)
    status, code = (403, "FORBIDDEN") if kind == "under-scoped" else (401, "UNAUTHENTICATED")
    assert_error(response, status, code)
    [row] = request_audit_rows(server.sessions, headers["X-Request-ID"])
    assert (row.action, row.outcome, row.error_code) == ("auth:failed", "failure", code)
    assert row.details is not None and row.details["truncated"] == ["details.path"]
    assert row.details["path"] == path[:1024]


# --- nested JSON: 422 VALIDATION_FAILED before any recursive parser runs ----------------------


def nested(levels: int) -> dict:  # type: ignore[type-arg]
    """Valid JSON ``levels`` deep: objects and arrays in turn, an object outermost."""
    value: object = 1
    for level in range(levels - 1):
        value = [value] if level % 2 == 0 else {"a": value}
    return {"a": value}


NESTED = {
    "brackets x5000": "[" * 5000,
    "objects x5000": '{"a":' * 5000,
    "valid, 33 deep": json.dumps(nested(33)),
    "brackets x60000": "[" * 60_000,  # just under the 64 KiB field cap
}


@pytest.mark.parametrize("name", list(NESTED))
def test_deeply_nested_metadata_is_a_validation_error_with_its_rejection_event(server: LiveServer, name: str) -> None:
    client = server.client()
    request_id = new_request_id("deep")
    response = client.upload(
        samples.png_bytes(), "a.png", "image/png",
        data={"metadata": NESTED[name]}, headers={"X-Request-ID": request_id},
    )
    error = assert_error(response, 422, "VALIDATION_FAILED")
    assert error["details"][0]["loc"] == ["body", "metadata"]
    [row] = request_audit_rows(server.sessions, request_id)
    assert (row.action, row.error_code) == ("upload:rejected", "VALIDATION_FAILED")
    assert_left_nothing(server, client)


def test_metadata_at_the_depth_bound_is_accepted(server: LiveServer) -> None:
    client = server.client()
    metadata = nested(32)
    response = client.upload(samples.png_bytes(), "a.png", "image/png", data={"metadata": json.dumps(metadata)})
    assert response.status_code == 202, response.text
    assert response.json()["metadata"] == metadata


@pytest.mark.parametrize("name", list(NESTED))
@pytest.mark.parametrize("content_type", ["application/json", "application/merge-patch+json"])
def test_deeply_nested_patch_bodies_are_validation_errors(server: LiveServer, name: str, content_type: str) -> None:
    client = server.client()
    upload = client.upload(samples.png_bytes(), "a.png", data={"metadata": '{"keep": 1}'}).json()
    body = '{"metadata": ' + (json.dumps(nested(32)) + "}" if name.startswith("valid") else NESTED[name])
    response = client.request(
        "PATCH", f"/v1/uploads/{upload['id']}", content=body.encode(), headers={"Content-Type": content_type}
    )
    assert_error(response, 422, "VALIDATION_FAILED")
    assert client.request("GET", f"/v1/uploads/{upload['id']}").json()["metadata"] == {"keep": 1}


# --- declared types: the normalized type is stored, whatever its length --------------------------


@pytest.mark.parametrize(
    "declared,stored",
    [
        ("image/png; " + "x" * 300, "image/png"),
        ("image/png; name=" + "y" * 5000, "image/png"),
        ("IMAGE/X-PNG ;" + "z" * 1000, "image/png"),
        ("application/octet-stream; " + "q=1;" * 200, "application/octet-stream"),
    ],
)
@pytest.mark.parametrize("shape", ["raw", "multipart"])
def test_a_long_declared_type_is_stored_normalized(server: LiveServer, declared: str, stored: str, shape: str) -> None:
    """On both databases (``database_url`` runs each test on SQLite and on PostgreSQL, whose
    VARCHAR(255) made the raw header a 503)."""
    client = server.client()
    if shape == "raw":
        response = client.request(
            "POST", "/v1/uploads?filename=a.png", content=samples.png_bytes(), headers={"Content-Type": declared}
        )
    else:
        response = client.upload(samples.png_bytes(), "a.png", declared)
    assert response.status_code == 202, response.text
    assert response.json()["declared_type"] == stored
    with server.sessions() as session:
        row = session.get(Upload, response.json()["id"])
        assert row is not None and row.declared_type == stored


# --- a body that trickles in: 408 REQUEST_TIMEOUT at the total deadline -------------------------


@pytest.mark.parametrize("pace", ["trickle", "stall"])
def test_a_trickling_body_times_out_with_408_and_leaves_nothing(server_factory, pace: str) -> None:  # type: ignore[no-untyped-def]
    deadline = 2
    slow = server_factory(limits={"max_body_seconds": deadline})
    client = slow.client()
    request_id = new_request_id("trickle")
    png = samples.png_bytes()
    headers = {
        "Authorization": f"Bearer {client.key}",
        "Content-Type": "image/png",
        "Content-Length": str(len(png) + 100_000),
        "X-Request-ID": request_id,
    }
    started = time.monotonic()
    with raw.connect(slow.url, timeout=15) as sock:
        sock.sendall(raw.head("POST", "/v1/uploads?filename=a.png", headers) + png[:16])
        # "trickle": one byte per 0.3 s, never idle long; "stall": nothing more at all.
        response = raw.trickle_until_answer(sock, png, sent=16, seconds=10, trickle=pace == "trickle")
    elapsed = time.monotonic() - started
    assert response is not None
    error = assert_error(response, 408, "REQUEST_TIMEOUT")
    assert error["details"] == {"limit_seconds": deadline}
    assert response.headers["connection"] == "close"
    assert deadline <= elapsed < deadline + 2, elapsed
    [row] = request_audit_rows(slow.sessions, request_id)
    assert (row.action, row.outcome, row.error_code) == ("upload:rejected", "failure", "REQUEST_TIMEOUT")
    assert_left_nothing(slow, client)


def test_a_body_arriving_in_time_is_not_affected_by_the_deadline(server_factory) -> None:  # type: ignore[no-untyped-def]
    slow = server_factory(limits={"max_body_seconds": 3})
    client = slow.client()
    png = samples.png_bytes()
    with raw.connect(slow.url, timeout=15) as sock:
        sock.sendall(raw.head("POST", "/v1/uploads?filename=a.png", {
            "Authorization": f"Bearer {client.key}", "Content-Type": "image/png", "Content-Length": str(len(png)),
        }))
        for offset in range(0, len(png), max(1, len(png) // 4)):
            sock.sendall(png[offset:offset + max(1, len(png) // 4)])
            time.sleep(0.3)
        response = raw.read_response(sock)
    assert response is not None and response.status_code == 202, response and response.text
