"""CORS through nginx: nginx answers preflights itself (never rate limited, never proxied), its own
refusals (413, 429, 404, 502) carry ``Access-Control-Allow-Origin`` for an allowed origin only,
and the app's answers pass through with exactly one such header."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import rawhttp as raw
from tests import samples
from tests.fixtures.app import Client, LiveServer, start_sibling
from tests.fixtures.nginx import NginxFront, start_front
from tests.fixtures.services import RedisService, S3Service
from tests.integration.contract import assert_error, new_request_id
from upload_service.devstack.process import free_port

ALLOWED = "https://app.example.test"
OTHER = "https://evil.example.test"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def cors_server(
    live_server: LiveServer, redis_service: RedisService, s3_service: S3Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """An API process with ``cors.allow_origins`` set, on the session's DB, Redis and S3."""
    sibling = start_sibling(
        live_server, redis_service, s3_service, tmp_path_factory.mktemp("cors-api"),
        cors={"allow_origins": [ALLOWED]},
    )
    try:
        yield sibling
    finally:
        sibling.process.stop()


@pytest.fixture(scope="module")
def cors_front(cors_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxFront]:
    front = start_front(cors_server, tmp_path_factory.mktemp("cors-nginx"))
    try:
        yield front
    finally:
        front.process.stop()


@pytest.fixture
def client(cors_server: LiveServer, redis_url: str) -> Client:
    return cors_server.client()


def preflight(url: str, origin: str, path: str = "/v1/uploads") -> httpx.Response:
    return httpx.options(
        url + path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,idempotency-key,x-request-id",
        },
    )


def allow_origin(response: httpx.Response) -> list[str]:
    return response.headers.get_list("access-control-allow-origin")


def test_nginx_answers_preflights_for_allowed_origins_only(cors_front: NginxFront) -> None:
    for path in ("/v1/uploads", "/v1/uploads/abc", "/v1/limits"):
        response = preflight(cors_front.url, ALLOWED, path)
        assert response.status_code == 204
        assert allow_origin(response) == [ALLOWED]
        assert {"Authorization", "Idempotency-Key"} <= {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
        assert response.headers["access-control-max-age"] == "600"
        assert response.headers["vary"] == "Origin" and response.headers["x-request-id"]
    for origin in (OTHER, "null", ALLOWED + ".evil", ALLOWED.upper(), "http://app.example.test"):
        response = preflight(cors_front.url, origin)
        assert response.status_code == 204 and allow_origin(response) == [], origin
    assert not [e for e in cors_front.access_entries() if e["method"] == "OPTIONS" and e["upstream_addr"]]


def test_the_apps_answers_pass_through_with_one_allow_origin(cors_front: NginxFront, client: Client) -> None:
    headers = {"Authorization": f"Bearer {client.key}", "Origin": ALLOWED}
    accepted = httpx.post(cors_front.url + "/v1/uploads", headers=headers, files={"file": ("a.png", samples.png_bytes())})
    assert accepted.status_code == 202
    assert allow_origin(accepted) == [ALLOWED]
    assert "location" in accepted.headers["access-control-expose-headers"].lower()
    refused = httpx.post(cors_front.url + "/v1/uploads", headers=headers, files={"file": ("a.html", samples.html_bytes())})
    assert_error(refused, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert allow_origin(refused) == [ALLOWED]
    other = httpx.post(
        cors_front.url + "/v1/uploads", headers={**headers, "Origin": OTHER}, files={"file": ("a.png", samples.png_bytes())}
    )
    assert other.status_code == 202 and allow_origin(other) == []


def _over_the_cap(front: NginxFront, client: Client, origin: str) -> httpx.Response:
    request_id = new_request_id("cors")
    with raw.connect(front.url) as sock:
        sock.sendall(
            raw.head(
                "POST", "/v1/uploads",
                {
                    "Authorization": f"Bearer {client.key}", "Origin": origin, "X-Request-ID": request_id,
                    "Content-Type": "application/pdf", "Content-Length": str(51 * MiB),
                },
            )
        )
        response = raw.read_response(sock)
    assert response is not None
    assert response.headers["x-request-id"] == request_id
    return response


def test_nginx_own_413_carries_the_header_for_an_allowed_origin_only(cors_front: NginxFront, client: Client) -> None:
    allowed = _over_the_cap(cors_front, client, ALLOWED)
    assert_error(allowed, 413, "FILE_TOO_LARGE")
    assert allow_origin(allowed) == [ALLOWED]
    assert "x-request-id" in allowed.headers["access-control-expose-headers"].lower()
    other = _over_the_cap(cors_front, client, OTHER)
    assert_error(other, 413, "FILE_TOO_LARGE")
    assert allow_origin(other) == [] and "access-control-expose-headers" not in other.headers
    public_404 = httpx.get(cors_front.url + "/metrics", headers={"Origin": ALLOWED})
    assert_error(public_404, 404, "NOT_FOUND")
    assert allow_origin(public_404) == [ALLOWED]


def test_preflights_never_count_against_the_upload_rate_limit(cors_front: NginxFront, client: Client) -> None:
    with cors_front.variant(upload_rate="1r/m", upload_burst=0) as strict:
        for _ in range(50):
            assert preflight(strict.url, ALLOWED).status_code == 204
        headers = {"Authorization": f"Bearer {client.key}", "Origin": ALLOWED}
        first = httpx.post(strict.url + "/v1/uploads", headers=headers, files={"file": ("a.png", samples.png_bytes())})
        assert first.status_code == 202, first.text
        # The next upload is over the rate: nginx's own 429 is readable by the page.
        limited = httpx.post(strict.url + "/v1/uploads", headers=headers, files={"file": ("b.png", samples.png_bytes())})
        assert_error(limited, 429, "RATE_LIMITED")
        assert allow_origin(limited) == [ALLOWED]


def test_a_dead_upstream_502_is_readable_by_an_allowed_page(cors_front: NginxFront) -> None:
    with cors_front.variant(upstreams=[f"127.0.0.1:{free_port()}"]) as dead:
        assert preflight(dead.url, ALLOWED).status_code == 204
        response = httpx.get(dead.url + "/v1/limits", headers={"Origin": ALLOWED, "Authorization": "Bearer x"})
        assert_error(response, 502, "UPSTREAM_UNAVAILABLE")
        assert allow_origin(response) == [ALLOWED]
        other = httpx.get(dead.url + "/v1/limits", headers={"Origin": OTHER})
        assert other.status_code == 502 and allow_origin(other) == []


def test_nginx_config_check_shows_the_cors_row(cors_server: LiveServer, tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("UPLOAD_")}
    env["UPLOAD_CORS__ALLOW_ORIGINS"] = f'["{ALLOWED}"]'
    result = subprocess.run(
        [sys.executable, "-m", "upload_service", "nginx-config", "--check"], env=env, capture_output=True, text=True,
        timeout=60, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "CORS (cors.allow_origins)" in result.stdout and ALLOWED in result.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "upload_service", "nginx-config"], env={**env, "UPLOAD_CORS__ALLOW_ORIGINS": '["*"]'},
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert refused.returncode == 2 and "'*' is refused" in refused.stderr
