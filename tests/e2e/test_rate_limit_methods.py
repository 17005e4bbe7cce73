"""nginx's two request rates split by method on the uploads path: an upload (POST /v1/uploads)
counts against the upload rate only, the list API (GET /v1/uploads) and every other request
against the API rate only, so a client paging through its uploads is never throttled like one
sending files, and uploads never use up the API budget."""

from __future__ import annotations

import httpx
import pytest

from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.fixtures.nginx import NginxFront
from tests.integration.contract import assert_error


@pytest.fixture
def client(server: LiveServer) -> Client:
    return server.client()


def _upload(url: str, client: Client, name: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/uploads", headers=client.headers, files={"file": (name, samples.png_bytes(), "image/png")}, timeout=30
    )


def test_listing_uploads_is_not_limited_like_uploading(front: NginxFront, client: Client) -> None:
    with front.variant(upload_rate="1r/m", upload_burst=0) as strict:
        for _ in range(5):
            listed = httpx.get(f"{strict.url}/v1/uploads", headers=client.headers, timeout=10)
            assert listed.status_code == 200, listed.text
        first = _upload(strict.url, client, "a.png")
        assert first.status_code == 202, first.text
        assert_error(_upload(strict.url, client, "b.png"), 429, "RATE_LIMITED")
        # The refused upload used no API budget either: listing still answers.
        assert httpx.get(f"{strict.url}/v1/uploads", headers=client.headers, timeout=10).status_code == 200
    assert client.upload_count() == 1


def test_uploads_do_not_use_up_the_api_rate_and_listing_counts_against_it(front: NginxFront, client: Client) -> None:
    with front.variant(api_rate="1r/m", api_burst=0, upload_rate="100r/s", upload_burst=100) as strict:
        for name in ("a.png", "b.png", "c.png"):
            response = _upload(strict.url, client, name)
            assert response.status_code == 202, response.text
        assert httpx.get(f"{strict.url}/v1/uploads", headers=client.headers, timeout=10).status_code == 200
        assert_error(httpx.get(f"{strict.url}/v1/uploads", headers=client.headers, timeout=10), 429, "RATE_LIMITED")
        assert_error(httpx.get(f"{strict.url}/v1/limits", headers=client.headers, timeout=10), 429, "RATE_LIMITED")
        # Uploading still goes through while the API rate is spent.
        assert _upload(strict.url, client, "d.png").status_code == 202
    assert client.upload_count() == 4
