"""The operator-facing files: ``upload-service nginx-config`` run as a real command (with real
``nginx -t``), and docker-compose.yml validated against the Compose spec offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from upload_service.nginxconf import render_nginx_config
from upload_service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def clean_env(**overrides: str) -> dict[str, str]:
    """This environment without any UPLOAD_* variable, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOAD_")}
    return {**env, **overrides}


def nginx_config(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "upload_service", "nginx-config", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_passes_on_the_default_settings_and_says_who_enforces_what(tmp_path: Path) -> None:
    result = nginx_config("--check", env=clean_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "nginx -t: ok" in result.stdout
    assert "test is successful" in result.stdout
    assert "nginx  body cap, POST /v1/uploads" in result.stdout
    assert f"{50 * MiB} bytes" in result.stdout
    assert "app    image limit" in result.stdout
    assert "429 RATE_LIMITED" in result.stdout


def test_check_fails_clearly_when_a_per_type_limit_exceeds_the_cap(tmp_path: Path) -> None:
    env = clean_env(UPLOAD_LIMITS__MAX_BODY_BYTES=str(30 * MiB), UPLOAD_LIMITS__MAX_PDF_BYTES=str(40 * MiB))
    result = nginx_config("--check", env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert f"max_pdf_bytes={40 * MiB} exceeds max_body_bytes={30 * MiB}" in result.stderr
    assert "nginx body cap" in result.stderr
    assert result.stdout == ""  # nothing rendered


def test_check_fails_clearly_when_nginx_rejects_the_result(tmp_path: Path) -> None:
    env = clean_env(
        UPLOAD_NGINX__TLS_CERTIFICATE=str(tmp_path / "missing.crt"),
        UPLOAD_NGINX__TLS_CERTIFICATE_KEY=str(tmp_path / "missing.key"),
    )
    result = nginx_config("--check", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "nginx rejected the rendered config" in result.stderr
    assert "missing.crt" in result.stderr


def test_unsafe_values_are_refused_before_rendering(tmp_path: Path) -> None:
    result = nginx_config(env=clean_env(UPLOAD_NGINX__UPSTREAMS='["127.0.0.1:1; evil"]'), cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid nginx settings" in result.stderr and "upstreams" in result.stderr


def test_output_and_prefix_write_exactly_the_render(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("UPLOAD_")]:
        monkeypatch.delenv(name)
    target = tmp_path / "out" / "nginx.conf"
    prefix = tmp_path / "prefix"
    result = nginx_config("--output", str(target), "--prefix", str(prefix), env=clean_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert target.read_text() == render_nginx_config(Settings(), prefix)
    assert f"pid {prefix}/nginx.pid;" in target.read_text()


def test_docker_compose_file_validates_against_the_compose_spec() -> None:
    tool = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    if not os.access(tool, os.X_OK):
        pytest.skip("check-jsonschema is not installed (pip install check-jsonschema)")
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_commits_no_secret_defaults() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "S3_API_ACCESS_KEY_ID", "S3_WORKER_SECRET_ACCESS_KEY"):
        assert f"${{{name}:?set {name}}}" in text
        assert f"${{{name}:-" not in text
