"""The nginx renderer as a pure function: settings in, config text out (no nginx, no disk)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from upload_service.api.requestid import _VALID as APP_REQUEST_ID_RULE
from upload_service.errors import ErrorCode
from upload_service.nginxconf import (
    DEFAULT_PREFIX,
    ERROR_PAGES,
    REQUEST_ID_PATTERN,
    NginxConfigError,
    enforcement_rows,
    render_nginx_config,
)
from upload_service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def no_upload_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Defaults mean defaults: no UPLOAD_* variable of the caller's shell leaks in."""
    for name in [k for k in os.environ if k.startswith("UPLOAD_")]:
        monkeypatch.delenv(name)
    yield


def settings(**sections: dict[str, Any]) -> Settings:
    return Settings(**sections)  # type: ignore[arg-type]


def location_block(config: str, match: str) -> str:
    """The body of ``location MATCH { ... }`` (no nested blocks in our locations)."""
    found = re.search(r"location " + re.escape(match) + r" \{(.*?)\n\s*\}", config, re.S)
    assert found, f"no location {match}"
    return found.group(1)


def test_the_committed_default_conf_is_a_fresh_render() -> None:
    committed = (ROOT / "nginx" / "default.conf").read_text()
    assert committed == render_nginx_config(Settings(), DEFAULT_PREFIX), (
        "nginx/default.conf is stale: regenerate with `upload-service nginx-config --output nginx/default.conf` "
        "(no UPLOAD_* variables set)"
    )


def test_the_request_id_rule_is_the_apps() -> None:
    assert REQUEST_ID_PATTERN == APP_REQUEST_ID_RULE.pattern
    assert f'"~{REQUEST_ID_PATTERN}" $http_x_request_id;' in render_nginx_config(Settings())


def test_uploads_get_the_body_cap_and_stream_other_routes_the_json_cap() -> None:
    limits = {"max_body_bytes": 30 * MiB, "max_image_bytes": 10 * MiB, "max_pdf_bytes": 30 * MiB}
    config = render_nginx_config(settings(limits=limits, nginx={"max_json_body_bytes": 4096}))
    uploads = location_block(config, "= /v1/uploads")
    assert f"client_max_body_size {30 * MiB};" in uploads
    for directive in ("proxy_request_buffering off;", "proxy_buffering off;"):
        assert directive in uploads
    # The body passed on in pieces of up to 128 KiB (nginx's own default: 16 KiB), uploads only.
    assert "client_body_buffer_size 131072;" in uploads and config.count("client_body_buffer_size") == 1
    tuned = render_nginx_config(settings(nginx={"upload_body_buffer_bytes": 1024 * 1024}))
    assert "client_body_buffer_size 1048576;" in location_block(tuned, "= /v1/uploads")
    assert "proxy_http_version 1.1;" in config and 'proxy_set_header Connection "";' in config
    assert "client_max_body_size 4096;" in config  # the http-level default for every other route
    assert "proxy_intercept_errors" not in config  # the app's own errors pass through


def test_timeouts_rates_and_keepalive_come_from_settings() -> None:
    config = render_nginx_config(
        settings(nginx={
            "client_body_timeout_seconds": 7, "client_header_timeout_seconds": 3, "send_timeout_seconds": 9,
            "keepalive_timeout_seconds": 11, "upload_rate": "2r/s", "upload_burst": 5, "api_rate": "30r/m",
            "api_burst": 0, "conn_per_client": 4, "upstream_keepalive": 0,
        })
    )
    for line in ("client_body_timeout 7s;", "client_header_timeout 3s;", "send_timeout 9s;", "keepalive_timeout 11s;",
                 "rate=2r/s;", "rate=30r/m;", "limit_conn upload_conn 4;", "limit_req_status 429;", "limit_conn_status 429;"):
        assert line in config, line
    assert "limit_req zone=upload_uploads burst=5 nodelay;" in config
    assert "limit_req zone=upload_api nodelay;" in config  # nginx refuses burst=0
    assert "keepalive 0" not in config  # nginx refuses it too: omitted


def test_one_or_many_upstreams_tcp_or_unix() -> None:
    config = render_nginx_config(settings(nginx={"upstreams": ["10.0.0.1:8080", "unix:/run/api.sock", "[::1]:9000", "api:8080"]}))
    upstream = re.search(r"upstream upload_api \{(.*?)\}", config, re.S)
    assert upstream
    assert re.findall(r"server (\S+);", upstream.group(1)) == ["10.0.0.1:8080", "unix:/run/api.sock", "[::1]:9000", "api:8080"]


@pytest.mark.parametrize(
    "nginx",
    [
        {"upstreams": ["127.0.0.1:1; evil"]},
        {"upstreams": ["http://api:8080"]},
        {"listen_host": "0.0.0.0;"},
        {"internal_listen": "127.0.0.1:9090 default_server; x"},
        {"large_client_header_buffers": "4 8k; y"},
        {"tls_certificate": "/a b.crt", "tls_certificate_key": "/k.key"},
        {"max_json_body_bytes": 100 * MiB},
    ],
)
def test_values_that_would_break_or_inject_into_the_config_are_refused(nginx: dict[str, Any]) -> None:
    with pytest.raises(NginxConfigError):
        render_nginx_config(settings(nginx=nginx))


def test_a_per_type_limit_above_the_cap_refuses_to_start() -> None:
    with pytest.raises(ValidationError, match=r"max_pdf_bytes=62914560 exceeds max_body_bytes=52428800, the nginx body cap"):
        settings(limits={"max_pdf_bytes": 60 * MiB})


def test_every_error_page_is_the_contract_shape() -> None:
    for page in ERROR_PAGES:
        assert "'" not in page.body and "\\" not in page.body  # safe inside nginx's '...'
        text = page.body.replace("${upload_request_id}", "abc12345").replace("${upload_body_limit_bytes}", "52428800")
        error = json.loads(text)["error"]
        assert set(error) == {"code", "message", "request_id", "details"}
        assert error["request_id"] == "abc12345"
        code = ErrorCode(error["code"])
        expected = 504 if page.trigger == 504 else code.status
        assert page.sent_status == expected
    triggers = {page.trigger for page in ERROR_PAGES}
    assert {400, 404, 408, 413, 414, 429, 494, 502, 503, 504} <= triggers


def test_error_pages_for_unparsed_requests_use_internal_uris() -> None:
    config = render_nginx_config(Settings())
    assert "error_page 400 = /_upload_error/400;" in config
    assert "internal;" in location_block(config, "= /_upload_error/400")
    assert "error_page 413 = @upload_error_413;" in config
    assert "return 413 " in location_block(config, "@upload_error_413")


def test_security_headers_and_internal_routes() -> None:
    config = render_nginx_config(Settings())
    assert "server_tokens off;" in config
    assert "add_header X-Content-Type-Options nosniff always;" in config
    assert "add_header Content-Security-Policy \"default-src 'none'; frame-ancestors 'none'\" always;" in config
    assert "proxy_set_header X-Request-ID $upload_request_id;" in config
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in config
    assert "$upload_request_id" in config.split("log_format", 1)[1].split(";", 1)[0]
    for path in ("/metrics", "/v1/audit", "/admin"):
        assert "return 404;" in location_block(config, f"^~ {path}")
    assert config.count("server {") == 1  # no internal listener unless asked


def test_internal_listener_proxies_metrics_and_admin() -> None:
    config = render_nginx_config(settings(nginx={"internal_listen": "127.0.0.1:9090"}))
    internal = config.split("listen 127.0.0.1:9090;", 1)[1]
    assert "proxy_pass http://upload_api;" in location_block(internal, "^~ /metrics")
    assert "proxy_pass http://upload_api;" in location_block(internal, "^~ /v1/audit")


def test_tls_adds_the_ssl_listener_and_hsts() -> None:
    config = render_nginx_config(settings(nginx={"tls_certificate": "/etc/tls/a.crt", "tls_certificate_key": "/etc/tls/a.key"}))
    assert "listen 127.0.0.1:8080 ssl;" in config
    assert "ssl_certificate /etc/tls/a.crt;" in config
    assert "Strict-Transport-Security" in config
    assert "Strict-Transport-Security" not in render_nginx_config(Settings())


def test_prefix_paths_and_user() -> None:
    relative = render_nginx_config(Settings())
    assert "pid nginx.pid;" in relative and "access_log logs/access.log upload_json;" in relative
    assert "\nuser " not in relative
    absolute = render_nginx_config(Settings(), Path("/srv/nginx"), user="root")
    assert "pid /srv/nginx/nginx.pid;" in absolute and "client_body_temp_path /srv/nginx/temp/client_body;" in absolute
    assert "\nuser root;" in absolute
    assert "daemon off;" in absolute


def test_the_enforcement_table_names_both_layers() -> None:
    rows = enforcement_rows(Settings())
    assert {row.layer for row in rows} == {"nginx", "app", "both"}
    assert any("413 FILE_TOO_LARGE" in row.client_sees for row in rows)


def test_every_nginx_knob_is_documented_for_operators() -> None:
    """docs/operations.md has one table of knobs; a new NginxSettings field must join it."""
    from upload_service.settings import NginxSettings

    docs = (ROOT / "docs" / "operations.md").read_text()
    names = [f"UPLOAD_NGINX__{name.upper()}" for name in NginxSettings.model_fields]
    names += [f"UPLOAD_LIMITS__MAX_{kind}_BYTES" for kind in ("BODY", "IMAGE", "PDF")]
    assert [name for name in names if f"`{name}`" not in docs] == []
