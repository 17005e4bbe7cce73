"""GET, PATCH and DELETE of upload records; API keys, scopes and tenant isolation."""

from __future__ import annotations

import time

import httpx
import pytest

from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.integration.contract import assert_error
from upload_service.storage import keys



@pytest.fixture
def upload_id(client: Client) -> str:
    response = client.upload(samples.png_bytes(), "first.png", data={"metadata": '{"a": 1}'})
    assert response.status_code == 202
    return str(response.json()["id"])


def patch(client: Client, upload_id: str, **kwargs):  # type: ignore[no-untyped-def]
    return client.request("PATCH", f"/v1/uploads/{upload_id}", **kwargs)


def test_patch_changes_only_the_fields_sent(client: Client, upload_id: str) -> None:
    response = patch(client, upload_id, json={"tags": ["x", "y", "x"]})
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["tags"] == ["x", "y"]
    assert record["filename"] == "first.png"
    assert record["metadata"] == {"a": 1}

    record = patch(client, upload_id, json={"filename": "C:\\dir\\renamed\u202e.png", "metadata": {"b": 2}}).json()
    assert record["filename"] == "renamed.png"
    assert record["metadata"] == {"b": 2}
    assert record["tags"] == ["x", "y"]
    assert record["updated_at"] >= record["created_at"]


def test_patch_null_clears(client: Client, upload_id: str) -> None:
    record = patch(client, upload_id, json={"metadata": None, "tags": None}).json()
    assert record["metadata"] is None and record["tags"] is None
    assert record["filename"] == "first.png"
    assert client.request("GET", f"/v1/uploads/{upload_id}").json()["metadata"] is None


@pytest.mark.parametrize("kwargs", [{"json": {}}, {"content": b""}])
def test_patch_without_fields(client: Client, upload_id: str, kwargs) -> None:  # type: ignore[no-untyped-def]
    assert_error(patch(client, upload_id, **kwargs), 400, "NO_FIELDS")


@pytest.mark.parametrize(
    "body",
    [{"metadata": [1, 2]}, {"tags": "not-a-list"}, {"unknown": 1}, {"tags": ["x" * 65]}, {"filename": "\x00"}],
)
def test_patch_validation(client: Client, upload_id: str, body: dict) -> None:  # type: ignore[type-arg]
    error = assert_error(patch(client, upload_id, json=body), 422, "VALIDATION_FAILED")
    assert error["details"] is None or isinstance(error["details"], list)


def test_patch_invalid_json(client: Client, upload_id: str) -> None:
    response = patch(client, upload_id, content=b"{oops", headers={"Content-Type": "application/json"})
    assert_error(response, 422, "VALIDATION_FAILED")


def test_delete_removes_objects_and_record(server: LiveServer, client: Client, upload_id: str) -> None:
    bucket = server.settings.storage.originals_bucket
    key = keys.original_key(client.tenant, upload_id)
    assert server.store.exists(bucket, key)
    assert client.request("DELETE", f"/v1/uploads/{upload_id}").status_code == 204
    assert not server.store.exists(bucket, key)
    assert client.upload_count() == 0
    assert_error(client.request("GET", f"/v1/uploads/{upload_id}"), 404, "NOT_FOUND")
    assert_error(client.request("DELETE", f"/v1/uploads/{upload_id}"), 404, "NOT_FOUND")


def test_tenants_never_see_each_other(server: LiveServer, client: Client, upload_id: str) -> None:
    other = server.client(scopes="upload,read,admin")
    for method, kwargs in (("GET", {}), ("PATCH", {"json": {"tags": ["t"]}}), ("DELETE", {})):
        assert_error(other.request(method, f"/v1/uploads/{upload_id}", **kwargs), 404, "NOT_FOUND")
    assert_error(other.request("GET", f"/v1/uploads/{upload_id}/artifacts/info.json"), 404, "NOT_FOUND")
    assert client.request("GET", f"/v1/uploads/{upload_id}").json()["tags"] is None


def test_authentication(server: LiveServer, upload_id: str) -> None:
    url = f"{server.url}/v1/uploads/{upload_id}"
    assert_error(httpx.get(url), 401, "UNAUTHENTICATED")
    assert httpx.get(url).headers["www-authenticate"] == "Bearer"
    assert_error(httpx.get(url, headers={"Authorization": "Basic abc"}), 401, "UNAUTHENTICATED")
    assert_error(httpx.get(url, headers={"Authorization": "Bearer usk_0000000000000000_" + "a" * 43}), 401, "UNAUTHENTICATED")
    assert_error(httpx.post(server.url + "/v1/uploads", content=b"x"), 401, "UNAUTHENTICATED")


def test_scopes(server: LiveServer, client: Client, upload_id: str) -> None:
    reader = server.client(scopes="read", tenant=client.tenant)
    assert reader.request("GET", f"/v1/uploads/{upload_id}").status_code == 200
    assert_error(reader.upload(samples.png_bytes(), "a.png"), 403, "FORBIDDEN")
    assert_error(reader.request("DELETE", f"/v1/uploads/{upload_id}"), 403, "FORBIDDEN")
    uploader = server.client(scopes="upload", tenant=client.tenant)
    assert_error(uploader.request("GET", f"/v1/uploads/{upload_id}"), 403, "FORBIDDEN")
    assert server.spool_entries() == []


def test_revoked_key_is_refused(server: LiveServer, client: Client, upload_id: str) -> None:
    from upload_service import auth
    from upload_service.db.engine import session_scope

    key_id = client.key.split("_")[1]
    with session_scope(server.sessions) as session:
        auth.revoke_key(session, key_id)
    # The API process trusts a key it checked for auth.KEY_CACHE_TTL_SECONDS (docs/security.md).
    time.sleep(auth.KEY_CACHE_TTL_SECONDS + 0.5)
    assert_error(client.request("GET", f"/v1/uploads/{upload_id}"), 401, "UNAUTHENTICATED")


def test_keys_table_holds_no_plaintext_key(server: LiveServer, client: Client) -> None:
    rows = {row.id: row for row in server.key_rows()}
    key_id = client.key.split("_")[1]
    row = rows[key_id]
    assert row.key_hash != client.key and len(row.key_hash) == 64
    secret = client.key.split("_", 2)[2]
    for stored in rows.values():
        assert secret not in " ".join(str(v) for v in (stored.id, stored.key_hash, stored.label, stored.scopes))
