"""``nginx.real_ip_from`` / ``nginx.real_ip_header``: validated, and rendered into the realip
directives only when set (the default config keys limits on the TCP peer)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from upload_service.nginxconf import check_nginx_config, render_nginx_config
from upload_service.settings import Settings


@pytest.fixture(autouse=True)
def no_upload_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [k for k in os.environ if k.startswith("UPLOAD_")]:
        monkeypatch.delenv(name)
    yield


def test_not_rendered_by_default() -> None:
    config = render_nginx_config(Settings())
    assert "set_real_ip_from" not in config and "real_ip_header" not in config


def test_rendered_normalised_and_recursive() -> None:
    config = render_nginx_config(Settings(nginx={"real_ip_from": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]}))
    for line in ("set_real_ip_from 10.0.0.0/8;", "set_real_ip_from 192.0.2.7/32;", "set_real_ip_from 2001:db8::/32;",
                 "real_ip_header X-Forwarded-For;", "real_ip_recursive on;"):
        assert line in config
    # The limit zones key on $binary_remote_addr (through the per-method maps), which the realip
    # module rewrites.
    assert config.index("real_ip_recursive on;") < config.index("limit_req_zone ")
    assert "POST $binary_remote_addr;" in config and "default $binary_remote_addr;" in config


@pytest.mark.parametrize(
    "entry",
    ["0.0.0.0/0", "::/0", "10.0.0.1/8", "10.0.0.0/33", "not-an-address", "10.0.0.0/8; include /etc/passwd", ""],
)
def test_bad_networks_are_refused(entry: str) -> None:
    with pytest.raises(ValidationError):
        Settings(nginx={"real_ip_from": [entry]})


@pytest.mark.parametrize("header", ["X-Forwarded-For; deny all", "X Real", "", "proxy_protocol", "$remote_addr"])
def test_bad_headers_are_refused(header: str) -> None:
    with pytest.raises(ValidationError):
        Settings(nginx={"real_ip_from": ["10.0.0.0/8"], "real_ip_header": header})


def test_nginx_accepts_the_rendered_directives() -> None:
    result = check_nginx_config(Settings(nginx={"real_ip_from": ["10.0.0.0/8", "2001:db8::/32"], "real_ip_header": "X-Real-IP"}))
    assert result.ok, result.output
