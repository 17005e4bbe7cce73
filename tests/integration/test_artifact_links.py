"""Artifact URLs a page can use: ``?redirect=false`` / ``Accept: application/json`` answer
``{"url", "expires_at"}``; URLs are signed for ``storage.public_endpoint_url`` when set; the
artifacts bucket's CORS lets an allowed page ``fetch()`` them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.fixtures.workers import run_jobs_in_process, wait_for_status
from tests.integration.contract import assert_error

THUMB = "thumb-256.webp"


def processed(server: LiveServer, uploader: Client) -> str:
    response = uploader.upload(samples.jpeg_bytes(300, 200), "photo.jpg")
    assert response.status_code == 202, response.text
    upload_id = str(response.json()["id"])
    run_jobs_in_process(server)
    wait_for_status(uploader, upload_id, {"done"}, timeout=10)
    return upload_id


def test_a_token_gets_its_thumbnail_as_json_or_redirect(server: LiveServer) -> None:
    client = server.client()
    token = client.request("POST", "/v1/upload-tokens", json={}).json()["token"]
    page = Client(server, token, client.tenant)
    upload_id = processed(server, page)
    path = f"/v1/uploads/{upload_id}/artifacts/{THUMB}"

    before = datetime.now(timezone.utc).replace(microsecond=0)
    link = page.request("GET", path, params={"redirect": "false"})
    assert link.status_code == 200 and link.headers["cache-control"] == "no-store"
    body = link.json()
    assert set(body) == {"url", "expires_at"}
    expires = datetime.fromisoformat(body["expires_at"])
    assert before + timedelta(seconds=server.settings.storage.presign_ttl_seconds) <= expires + timedelta(seconds=1)
    image = httpx.get(body["url"], timeout=10)
    assert image.status_code == 200 and image.content[:4] == b"RIFF" and image.headers["content-type"] == "image/webp"

    assert set(page.request("GET", path, headers={"Accept": "application/json"}).json()) == {"url", "expires_at"}
    redirect = page.request("GET", path, follow_redirects=False)
    assert redirect.status_code == 307 and redirect.headers["location"].startswith("http")
    # A browser's <img> Accept header still gets the redirect.
    img = page.request("GET", path, headers={"Accept": "image/avif,image/webp,*/*;q=0.8"}, follow_redirects=False)
    assert img.status_code == 307
    assert_error(page.request("GET", f"/v1/uploads/{upload_id}/artifacts/nope", params={"redirect": "false"}), 404, "NOT_FOUND")


def test_urls_are_signed_for_the_public_endpoint(server: LiveServer, server_factory: Any) -> None:
    internal = urlparse(server.settings.storage.endpoint_url or "")
    public = f"http://localhost:{internal.port}"
    other = server_factory(storage={"public_endpoint_url": public})
    client = other.client()
    upload_id = processed(other, client)
    url = client.request("GET", f"/v1/uploads/{upload_id}/artifacts/{THUMB}", params={"redirect": "false"}).json()["url"]
    assert url.startswith(public + "/")
    assert httpx.get(url, timeout=10).status_code == 200  # the signature holds at that address
    # The same URL sent to another host name fails its signature: it really was signed for `public`.
    moved = url.replace(public, f"http://127.0.0.1:{internal.port}")
    assert httpx.get(moved, timeout=10).status_code == 403


def test_the_artifacts_bucket_cors_lets_an_allowed_page_fetch(server: LiveServer) -> None:
    allowed = "https://app.example.test"
    client = server.client()
    upload_id = processed(server, client)
    store: Any = server.store
    store.allow_browser_gets([allowed], max_age_seconds=60)
    try:
        url = client.request("GET", f"/v1/uploads/{upload_id}/artifacts/{THUMB}", params={"redirect": "false"}).json()["url"]
        fetched = httpx.get(url, headers={"Origin": allowed}, timeout=10)
        assert fetched.status_code == 200 and fetched.headers["access-control-allow-origin"] == allowed
        foreign = httpx.get(url, headers={"Origin": "https://evil.example.test"}, timeout=10)
        assert "access-control-allow-origin" not in foreign.headers
    finally:
        # Back to the server's default (SeaweedFS without a bucket rule answers any origin).
        store.allow_browser_gets([])


@pytest.mark.parametrize("accept, redirect, as_json", [(None, True, False), ("application/json", True, True),
                                                      ("text/html, application/json;q=0.9", True, True),
                                                      ("*/*", True, False), (None, False, True)])
def test_wants_json(accept: str | None, redirect: bool, as_json: bool) -> None:
    from upload_service.api.artifact_links import wants_json

    assert wants_json(redirect, accept) is as_json
