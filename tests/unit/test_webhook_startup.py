"""A configured but unusable webhook key refuses to start the API and the worker (like the
token secret); no key at all only turns webhooks off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from upload_service.settings import WebhookSettings
from upload_service.webhooks.secretbox import WebhookKeyError, check_configured_keys


def test_no_key_is_allowed_a_broken_one_is_not(tmp_path: Path) -> None:
    check_configured_keys(WebhookSettings())  # webhooks off
    with pytest.raises(WebhookKeyError, match="cannot be read"):
        check_configured_keys(WebhookSettings(secret_keys_file=tmp_path / "missing"))
    (tmp_path / "keys").write_text("k1=short\n")
    with pytest.raises(WebhookKeyError, match="shorter than 32 bytes"):
        check_configured_keys(WebhookSettings(secret_keys_file=tmp_path / "keys"))
    with pytest.raises(WebhookKeyError, match="active_key_id"):
        check_configured_keys(WebhookSettings(secret_keys={"k1": "x" * 32}, active_key_id="k2"))


@pytest.mark.parametrize("command", [["worker"], ["serve", "--workers", "1", "--port", "1"]])
def test_the_api_and_the_worker_refuse_a_broken_key(command: list[str], tmp_path: Path) -> None:
    env = {
        **os.environ,
        "UPLOAD_WEBHOOKS__SECRET_KEYS_FILE": str(tmp_path / "missing"),
        "UPLOAD_TOKENS__SECRETS": '{"t": "' + "s" * 40 + '"}',
        "UPLOAD_SPOOL__DIR": str(tmp_path / "spool"),
        "UPLOAD_DATABASE__URL": f"sqlite:///{tmp_path}/db.sqlite",
        "UPLOAD_REDIS__URL": "unix:///nonexistent/redis.sock",
    }
    done = subprocess.run(
        [sys.executable, "-m", "upload_service", *command], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "webhooks.secret_keys_file cannot be read" in done.stderr
