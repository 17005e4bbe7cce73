"""``GET /v1/uploads`` through a real uvicorn, on SQLite and PostgreSQL: keyset pages that return
every upload exactly once, the tenant's own only (an upload token: its own only), never one
being deleted, each filter, and refusals of bad cursors (400) and bad parameters (422)."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.integration.contract import assert_error
from tests.integration.contract import check_against
from upload_service.db import repository
from upload_service.db.engine import session_scope
from upload_service.db.models import Upload, UploadStatus

BASE = datetime(2026, 1, 1, tzinfo=timezone.utc)



def insert(
    server: LiveServer, tenant: str, created_at: datetime, *, status: str = "done",
    tags: list[str] | None = None, token_id: str | None = None,
) -> str:
    """A row as the accept path writes it (rows only: the listing reads nothing else)."""
    upload_id = uuid.uuid4().hex
    with session_scope(server.sessions) as session:
        repository.add_upload(session, Upload(
            id=upload_id, tenant=tenant, filename=f"{upload_id[:6]}.png", size=1, sha256="0" * 64,
            declared_type="image/png", detected_type="image/png", status=status, metadata_=None, tags=tags,
            original_key=f"{tenant}/{upload_id}/original", token_id=token_id, attempts=0,
            created_at=created_at, updated_at=created_at, artifacts=[],
        ))
    return upload_id


def list_page(client: Client, **params: Any) -> httpx.Response:
    return client.request("GET", "/v1/uploads", params=params)


def list_all(client: Client, **params: Any) -> list[dict[str, Any]]:
    """Every page, following ``next_cursor``; checks each page's size and shape."""
    items: list[dict[str, Any]] = []
    cursor = None
    limit = params.get("limit", 50)
    for _ in range(1000):
        response = list_page(client, **params, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        assert len(body["items"]) <= limit
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
        assert len(body["items"]) == limit  # only the last page may be short
    raise AssertionError("pagination did not end")


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def newest_first(rows: list[tuple[datetime, str]]) -> list[str]:
    return [upload_id for _, upload_id in sorted(rows, reverse=True)]


def test_pages_over_250_uploads_return_each_exactly_once_newest_first(server: LiveServer, client: Client) -> None:
    # 5 uploads share each timestamp: the id breaks ties, so no page boundary can drop or repeat one.
    rows = [(BASE + timedelta(seconds=i // 5), insert(server, client.tenant, BASE + timedelta(seconds=i // 5)))
            for i in range(250)]
    other = server.client()
    foreign_rows = [(BASE + timedelta(seconds=i), insert(server, other.tenant, BASE + timedelta(seconds=i))) for i in range(20)]
    foreign = {upload_id for _, upload_id in foreign_rows}
    gone = insert(server, client.tenant, BASE + timedelta(seconds=7))
    with session_scope(server.sessions) as session:
        assert repository.mark_deleting(session, gone)
    expected = newest_first(rows)

    for limit in (37, 50, 200):
        listed = ids(list_all(client, limit=limit))
        assert listed == expected, limit
    assert len(list_page(client).json()["items"]) == 50  # the default page size

    # Uploads created while a client pages (newer than its first page) don't disturb its pages.
    first = list_page(client, limit=100).json()
    insert(server, client.tenant, BASE + timedelta(days=1))
    insert(server, client.tenant, BASE + timedelta(seconds=40))  # inside the first page's span (49 s to 30 s)
    rest = list_all_from(client, first["next_cursor"], limit=100)
    assert ids(first["items"]) + ids(rest) == expected
    assert not foreign & set(expected) and gone not in expected
    assert ids(list_all(other, limit=7)) == newest_first(foreign_rows)


def list_all_from(client: Client, cursor: str | None, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while cursor is not None:
        response = list_page(client, cursor=cursor, **params)
        assert response.status_code == 200, response.text
        items += response.json()["items"]
        cursor = response.json()["next_cursor"]
    return items


def test_real_uploads_are_listed_as_their_records_for_their_tenant_only(server: LiveServer, client: Client) -> None:
    made = []
    for width in (5, 6, 7):
        response = client.upload(samples.png_bytes(width, 4), f"w{width}.png")
        assert response.status_code == 202, response.text
        made.append(response.json()["id"])
    other = server.client()
    other_id = other.upload(samples.png_bytes(), "o.png").json()["id"]

    listed = list_page(client).json()
    assert ids(listed["items"]) == made[::-1] and listed["next_cursor"] is None
    for item in listed["items"]:
        assert item == client.request("GET", f"/v1/uploads/{item['id']}").json()
    assert ids(list_page(other).json()["items"]) == [other_id]
    # A read-only key of the tenant lists too; a key of another tenant never sees these.
    reader = server.client(scopes="read", tenant=client.tenant)
    assert ids(list_page(reader).json()["items"]) == made[::-1]

    assert client.request("DELETE", f"/v1/uploads/{made[1]}").status_code == 204
    assert ids(list_page(client).json()["items"]) == [made[2], made[0]]
    # An upload being deleted (a DELETE that has marked it but not finished) is not listed.
    with session_scope(server.sessions) as session:
        assert repository.mark_deleting(session, made[0])
    assert ids(list_page(client).json()["items"]) == [made[2]]
    assert_error(httpx.get(server.url + "/v1/uploads", timeout=10), 401, "UNAUTHENTICATED")


def test_filters_status_time_and_tag(server: LiveServer, client: Client) -> None:
    t = [BASE + timedelta(hours=h) for h in range(6)]
    queued = insert(server, client.tenant, t[0], status="queued", tags=["a", "b"])
    processing = insert(server, client.tenant, t[1], status="processing", tags=["ab"])
    done = insert(server, client.tenant, t[2], status="done", tags=["b", 'x"y'])
    failed = insert(server, client.tenant, t[3], status="failed", tags=None)
    done_late = insert(server, client.tenant, t[4], status="done", tags=["50%", "a"])
    insert(server, client.tenant, t[5], status=UploadStatus.DELETING, tags=["a"])
    insert(server, server.client().tenant, t[2], status="done", tags=["a"])

    def listed(**params: Any) -> list[str]:
        return ids(list_all(client, **params))

    assert listed(status="done") == [done_late, done]
    assert listed(status="queued") == [queued]
    assert listed(status="processing") == [processing]
    assert listed(status="failed") == [failed]
    # Exclusive bounds, any offset (02:00+02:00 is 00:00Z), fractions of a second.
    assert listed(created_after="2026-01-01T02:00:00Z") == [done_late, failed]
    assert listed(created_after="2026-01-01T03:00:00+02:00") == [done_late, failed, done]
    assert listed(created_before="2026-01-01T01:00:00.000001Z") == [processing, queued]
    assert listed(created_after="2026-01-01T00:00:00Z", created_before="2026-01-01t04:00:00z") == [failed, done, processing]
    # A tag is a whole element of the list: "a" does not match "ab"; quotes and % are literal.
    assert listed(tag="a") == [done_late, queued]
    assert listed(tag="ab") == [processing]
    assert listed(tag='x"y') == [done]
    assert listed(tag="50%") == [done_late]
    assert listed(tag="%") == [] and listed(tag="nope") == []
    assert listed(tag="b", status="done") == [done]
    assert listed(tag="a", created_before="2026-01-01T03:00:00Z", limit=1) == [queued]
    # Filters keep applying across pages.
    assert listed(tag="b", limit=1) == [done, queued]


def test_bad_cursors_are_400(server: LiveServer, client: Client) -> None:
    for i in range(3):
        insert(server, client.tenant, BASE + timedelta(minutes=i), status="done")
    cursor = list_page(client, limit=1).json()["next_cursor"]
    assert cursor and list_page(client, limit=1, cursor=cursor).status_code == 200

    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    flipped_time = bytes([raw[0], raw[1] ^ 0x01]) + raw[2:]
    flipped_id = raw[:10] + bytes([raw[10] ^ 0x80]) + raw[11:]
    encode = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    bad = [
        "", "garbage", "!!!!", "=" * 8, "a" * 5000, "%00", cursor[:-1], cursor[:-4], cursor[4:], cursor + "A",
        cursor + "AAAA", encode(flipped_time), encode(flipped_id), encode(raw[:-1]), encode(b"\xff" * len(raw)),
        cursor.swapcase(), cursor + "==", "\u00e9" + cursor, base64.urlsafe_b64encode(raw).decode() + "=",
    ]
    for value in bad:
        assert_error(list_page(client, cursor=value), 400, "BAD_REQUEST")
    # A cursor is for the query it was made for: other filters, another tenant → 400 too.
    assert_error(list_page(client, cursor=cursor, status="done"), 400, "BAD_REQUEST")
    assert_error(list_page(server.client(), cursor=cursor), 400, "BAD_REQUEST")
    done_cursor = list_page(client, limit=1, status="done").json()["next_cursor"]
    assert_error(list_page(client, cursor=done_cursor, status="failed"), 400, "BAD_REQUEST")
    # ... but not to the page size.
    assert list_page(client, limit=2, cursor=cursor).status_code == 200


def test_limits_and_filter_values_are_validated(server: LiveServer, client: Client) -> None:
    for limit in ("0", "-1", "201", "1000000000000000000000", "ten", "1.5"):
        error = assert_error(list_page(client, limit=limit), 422, "VALIDATION_FAILED")
        assert error["details"][0]["loc"] == ["query", "limit"], error
    for stamp in ("2026-01-01", "2026-01-01T00:00:00", "yesterday", "2026-02-30T00:00:00Z", "2026-01-01T25:00:00Z",
                  "2026-01-01T00:00:00+24:00", "9999-12-31T23:59:59-01:00", "0000-01-01T00:00:00Z", "1700000000"):
        for field in ("created_after", "created_before"):
            error = assert_error(list_page(client, **{field: stamp}), 422, "VALIDATION_FAILED")
            assert error["details"][0]["loc"] == ["query", field], (stamp, error)
    for status in ("deleting", "DONE", "", "x"):
        assert_error(list_page(client, status=status), 422, "VALIDATION_FAILED")
    for tag in ("", "x" * 65):
        assert_error(list_page(client, tag=tag), 422, "VALIDATION_FAILED")
    assert list_page(client, limit=200).status_code == 200
    assert list_page(client, limit=1).status_code == 200
    assert list_page(client, tag="x" * 64).status_code == 200
    writer_only = server.client(scopes="upload", tenant=client.tenant)
    assert_error(list_page(writer_only), 403, "FORBIDDEN")


def test_an_upload_token_lists_only_the_uploads_it_created(server: LiveServer, client: Client) -> None:
    by_key = client.upload(samples.png_bytes(), "key.png").json()["id"]

    def mint() -> Client:
        response = client.request("POST", "/v1/upload-tokens", json={"max_uploads": 5})
        assert response.status_code == 201, response.text
        return Client(server, response.json()["token"], client.tenant)

    page, other_page = mint(), mint()
    mine = [page.upload(samples.png_bytes(4 + i, 4), f"p{i}.png").json()["id"] for i in range(3)]
    theirs = other_page.upload(samples.png_bytes(), "o.png").json()["id"]

    assert ids(list_all(page, limit=2)) == mine[::-1]
    assert ids(list_all(other_page)) == [theirs]
    assert set(ids(list_all(client))) == {by_key, theirs, *mine}
    # A cursor made for the key's listing is not the token's (and the reverse).
    key_cursor = list_page(client, limit=1).json()["next_cursor"]
    assert_error(list_page(page, cursor=key_cursor), 400, "BAD_REQUEST")
    token_cursor = list_page(page, limit=1).json()["next_cursor"]
    assert_error(list_page(client, cursor=token_cursor), 400, "BAD_REQUEST")
    assert_error(list_page(other_page, cursor=token_cursor), 400, "BAD_REQUEST")


def test_the_statuses_it_answers_are_documented(server: LiveServer, client: Client, schema: dict[str, Any]) -> None:
    seen = {
        check_against(schema, list_page(client)),
        check_against(schema, list_page(client, cursor="garbage")),
        check_against(schema, list_page(client, limit=0)),
        check_against(schema, httpx.get(server.url + "/v1/uploads", timeout=10)),
        check_against(schema, list_page(server.client(scopes="upload"))),
    }
    assert seen == {f"GET /v1/uploads {s}" for s in (200, 400, 422, 401, 403)}
    operation = schema["paths"]["/v1/uploads"]["get"]
    assert "BAD_REQUEST" in operation["responses"]["400"]["x-error-codes"]
    page_schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert page_schema == {"$ref": "#/components/schemas/UploadList"}
