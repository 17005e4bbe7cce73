"""The demo page's backend (``upload_service.demo.server``) on a real loopback port: it serves
the page with a CSP, mints tokens only for its own page (Host and Origin checked), answers in
the error contract when the API is away, and never sends the key. The whole flow with the real
API and a browser is tests/e2e/test_browser.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from upload_service.devstack.demo import demo_origins
from upload_service.demo.server import DemoServer
from upload_service.devstack.process import free_port
from upload_service.devstack.stack import build_settings
from upload_service.settings import Settings

KEY = "usk_demo_0123456789abcdef_secretpart"


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[str]:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    dead_api = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    server = DemoServer(("127.0.0.1", 0), api_url=dead_api, key_file=key_file, token_request={"max_uploads": 1})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_page_is_served_with_a_csp_that_allows_only_itself_and_the_api(demo: str) -> None:
    page = httpx.get(demo + "/", timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self' http://127.0.0.1:" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(demo + "/demo.js", timeout=5)
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    missing = httpx.get(demo + "/../pyproject.toml", timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    for response in (page, script, missing):
        assert KEY not in response.text


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example.test"}, {"Host": "evil.example.test"}, {"Origin": "null"}],
    ids=["foreign-origin", "rebound-host", "null-origin"],
)
def test_tokens_are_only_for_the_page_itself(demo: str, headers: dict[str, str]) -> None:
    response = httpx.post(demo + "/token", headers=headers, timeout=5)
    assert response.status_code == 403 and response.json()["error"]["code"] == "FORBIDDEN"
    assert "access-control-allow-origin" not in response.headers


def test_an_unreachable_api_is_a_502_in_the_error_shape_without_the_key(demo: str) -> None:
    response = httpx.post(demo + "/token", headers={"Origin": demo}, timeout=15)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "UPSTREAM_UNAVAILABLE" and error["message"]
    assert KEY not in response.text


def test_the_dev_stack_adds_the_demo_origins_to_the_configured_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPLOAD_CORS__ALLOW_ORIGINS", '["https://app.example.test"]')
    settings = build_settings(
        Settings(), tmp_path, redis_url="unix:///nowhere/redis.sock", s3_endpoint="http://127.0.0.1:1",
        credentials={"S3_ACCESS_KEY_ID": "AK", "S3_SECRET_ACCESS_KEY": "secret"}, extra_origins=demo_origins(8081),
    )
    assert settings.cors.allow_origins == ["https://app.example.test", "http://127.0.0.1:8081", "http://localhost:8081"]
