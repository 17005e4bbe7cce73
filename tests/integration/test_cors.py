"""CORS answered by the app itself (no nginx): preflights and actual requests of an allowed
origin carry the headers a page needs; any other origin gets none; no origins, no CORS."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests import samples
from tests.fixtures.app import Client, LiveServer, start_sibling
from tests.fixtures.services import RedisService, S3Service
from tests.integration.contract import assert_error

ALLOWED = "https://app.example.test"
OTHER = "https://evil.example.test"


@pytest.fixture(scope="module")
def cors_server(
    live_server: LiveServer, redis_service: RedisService, s3_service: S3Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One API process with two origins allowed, for the module (on the session's DB, Redis, S3)."""
    sibling = start_sibling(
        live_server, redis_service, s3_service, tmp_path_factory.mktemp("cors-app"),
        cors={"allow_origins": [ALLOWED, "http://localhost:5173"], "max_age": 123},
    )
    try:
        yield sibling
    finally:
        sibling.process.stop()


def preflight(url: str, origin: str, headers: str = "authorization,content-type,idempotency-key") -> httpx.Response:
    return httpx.options(
        url + "/v1/uploads",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": headers},
    )


def test_preflight_of_an_allowed_origin(cors_server: LiveServer) -> None:
    response = preflight(cors_server.url, ALLOWED)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key", "x-request-id"} <= allowed
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-max-age"] == "123"
    assert "access-control-allow-credentials" not in response.headers


def test_preflight_of_another_origin_or_header_gets_no_allow_origin(cors_server: LiveServer) -> None:
    for response in (preflight(cors_server.url, OTHER), preflight(cors_server.url, "null"),
                     preflight(cors_server.url, ALLOWED + ".evil"), preflight(cors_server.url, ALLOWED, "x-evil")):
        assert response.status_code == 400
        assert response.headers.get("access-control-allow-origin") in (None, ALLOWED)
    assert "access-control-allow-origin" not in preflight(cors_server.url, OTHER).headers


def test_actual_requests_expose_what_a_page_reads(cors_server: LiveServer) -> None:
    client = cors_server.client()
    accepted = client.upload(samples.png_bytes(), "a.png", headers={"Origin": ALLOWED})
    assert accepted.status_code == 202
    assert accepted.headers["access-control-allow-origin"] == ALLOWED
    exposed = {h.strip().lower() for h in accepted.headers["access-control-expose-headers"].split(",")}
    assert exposed == {"location", "x-request-id", "retry-after", "idempotent-replayed"}
    assert "origin" in accepted.headers["vary"].lower()
    # Errors too: the page reads the JSON body and X-Request-ID of a refusal.
    refused = client.upload(samples.html_bytes(), "a.html", headers={"Origin": ALLOWED})
    assert_error(refused, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert refused.headers["access-control-allow-origin"] == ALLOWED
    anonymous = httpx.get(cors_server.url + "/v1/limits", headers={"Origin": ALLOWED})
    assert_error(anonymous, 401, "UNAUTHENTICATED")
    assert anonymous.headers["access-control-allow-origin"] == ALLOWED
    # Another origin: the same answers, without the header, so its page can't read them.
    other = client.upload(samples.png_bytes(), "b.png", headers={"Origin": OTHER})
    assert other.status_code == 202 and "access-control-allow-origin" not in other.headers


def test_no_origins_no_cors(server: LiveServer) -> None:
    response = preflight(server.url, ALLOWED)
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    client = Client(server, server.client().key, "")
    actual = client.request("GET", "/v1/limits", headers={"Origin": ALLOWED})
    assert actual.status_code == 200
    assert not [h for h in actual.headers if h.lower().startswith("access-control-")]
