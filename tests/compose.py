"""docker-compose.yml rendered offline by the real Compose v2 loader (``docker-compose config``),
with a value for every secret it requires: for the compose file's own tests and for the tests
that start real services with what it renders (the S3 identities)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"

#: The secrets compose requires (``${NAME:?...}``), with values for rendering the file here.
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret",
    "REDIS_PASSWORD": "redissecret",
    "UPLOAD_TOKEN_SECRET": "t" * 40,
    "UPLOAD_WEBHOOK_SECRET_KEY": "w" * 40,
    "SEAWEEDFS_JWT_SECRET": "jwt-secret-jwt-secret",
    "S3_ADMIN_ACCESS_KEY_ID": "ADMINKEY",
    "S3_ADMIN_SECRET_ACCESS_KEY": "admin-secret-admin-secret",
    "S3_API_ACCESS_KEY_ID": "APIKEY",
    "S3_API_SECRET_ACCESS_KEY": "api-secret-api-secret",
    "S3_WORKER_ACCESS_KEY_ID": "WORKERKEY",
    "S3_WORKER_SECRET_ACCESS_KEY": "worker-secret-worker-secret",
}


def tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not os.access(found, os.X_OK):
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("docker-compose"), "-f", str(COMPOSE), "config", "--format", "json"],
        env={"PATH": os.environ.get("PATH", os.defpath), "HOME": os.environ.get("HOME", "/nonexistent"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
