"""``nginx-config --ingress-annotations`` as a pure function: the same settings as our nginx,
spelled the way ingress-nginx takes them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from upload_service.nginxconf import (
    INGRESS_PREFIX,
    NginxConfigError,
    enforcement_rows,
    format_ingress_annotations,
    ingress_annotations,
    rate_limit_retry_after,
    render_nginx_config,
)
from upload_service.settings import Settings

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def no_upload_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [k for k in os.environ if k.startswith("UPLOAD_")]:
        monkeypatch.delenv(name)
    yield


def annotations(**sections: Any) -> dict[str, dict[str, str]]:
    return ingress_annotations(Settings(**sections))


def test_the_body_caps_and_streaming_match_the_nginx_config() -> None:
    limits = {"max_body_bytes": 30 * MiB, "max_image_bytes": 10 * MiB, "max_pdf_bytes": 30 * MiB}
    settings = Settings(limits=limits, nginx={"max_json_body_bytes": 4096, "proxy_read_timeout_seconds": 77})
    rendered = ingress_annotations(settings)
    config = render_nginx_config(settings)
    uploads, api = rendered["uploads"], rendered["api"]
    assert uploads[INGRESS_PREFIX + "proxy-body-size"] == str(30 * MiB) and f"client_max_body_size {30 * MiB};" in config
    assert api[INGRESS_PREFIX + "proxy-body-size"] == "4096" and "client_max_body_size 4096;" in config
    assert uploads[INGRESS_PREFIX + "proxy-request-buffering"] == "off" == uploads[INGRESS_PREFIX + "proxy-buffering"]
    assert INGRESS_PREFIX + "proxy-request-buffering" not in api
    buffer = settings.nginx.upload_body_buffer_bytes
    assert uploads[INGRESS_PREFIX + "client-body-buffer-size"] == str(buffer)
    assert f"client_body_buffer_size {buffer};" in config and INGRESS_PREFIX + "client-body-buffer-size" not in api
    for block in (uploads, api):
        assert block[INGRESS_PREFIX + "proxy-read-timeout"] == "77" and "proxy_read_timeout 77s;" in config
        assert block[INGRESS_PREFIX + "proxy-http-version"] == "1.1"


@pytest.mark.parametrize(
    ("rate", "burst", "expected"),
    [
        ("10r/s", 20, {"limit-rps": "10", "limit-burst-multiplier": "2"}),
        ("10r/s", 25, {"limit-rps": "10", "limit-burst-multiplier": "3"}),  # rounded up
        ("30r/m", 0, {"limit-rpm": "30", "limit-burst-multiplier": "1"}),  # ingress-nginx's floor
        ("100r/s", 5, {"limit-rps": "100", "limit-burst-multiplier": "1"}),
    ],
)
def test_rates_and_bursts(rate: str, burst: int, expected: dict[str, str]) -> None:
    uploads = annotations(nginx={"upload_rate": rate, "upload_burst": burst})["uploads"]
    got = {k.removeprefix(INGRESS_PREFIX): v for k, v in uploads.items() if "limit-r" in k or "burst" in k}
    assert got == expected


def test_the_controller_block_and_the_real_client_address() -> None:
    plain = annotations()["controller"]
    assert plain["client-body-timeout"] == "30" and plain["large-client-header-buffers"] == "4 8k"
    assert plain["limit-req-status-code"] == "429" and "use-forwarded-headers" not in plain
    behind = annotations(nginx={"real_ip_from": ["10.0.0.0/8", "192.0.2.7"]})["controller"]
    assert behind["use-forwarded-headers"] == "true" and "enable-real-ip" not in behind
    assert behind["proxy-real-ip-cidr"] == "10.0.0.0/8,192.0.2.7/32"
    assert behind["forwarded-for-header"] == "X-Forwarded-For"
    other = annotations(nginx={"real_ip_from": ["10.0.0.0/8"], "real_ip_header": "X-Real-IP"})["controller"]
    assert other["enable-real-ip"] == "true" and "use-forwarded-headers" not in other
    assert (other["forwarded-for-header"], other["proxy-real-ip-cidr"]) == ("X-Real-IP", "10.0.0.0/8")


def test_the_formatted_output_is_yaml_of_strings() -> None:
    settings = Settings(nginx={"real_ip_from": ["10.1.0.0/16"]})
    parsed = yaml.safe_load(format_ingress_annotations(settings))
    assert parsed == ingress_annotations(settings)
    assert all(isinstance(v, str) for block in parsed.values() for v in block.values())


def test_invalid_settings_are_refused_as_for_nginx() -> None:
    with pytest.raises(NginxConfigError):
        annotations(nginx={"upstreams": ["bad upstream;"]})


def test_the_check_table_says_which_address_is_the_client() -> None:
    rows = {r.what: r for r in enforcement_rows(Settings(nginx={"real_ip_from": ["10.0.0.0/8"]}))}
    assert rows["client address for limits, logs, audit"].value == "X-Forwarded-For from 10.0.0.0/8"
    rows = {r.what: r for r in enforcement_rows(Settings())}
    assert rows["client address for limits, logs, audit"].value == "the TCP peer"


@pytest.mark.parametrize(("upload_rate", "api_rate", "seconds"), [("10r/s", "50r/s", 1), ("10r/m", "50r/s", 60), ("10r/s", "5r/m", 60)])
def test_nginxs_429_says_when_to_retry(upload_rate: str, api_rate: str, seconds: int) -> None:
    settings = Settings(nginx={"upload_rate": upload_rate, "api_rate": api_rate})
    assert rate_limit_retry_after(settings) == seconds
    config = render_nginx_config(settings)
    block = config[config.index("location @upload_error_429"):]
    block = block[: block.index("}")]
    assert f"add_header Retry-After {seconds} always;" in block
    assert config.count("add_header Retry-After") == config.count("location @upload_error_429")
