"""The Kubernetes manifests in deploy/kubernetes, checked offline (no cluster, no kubectl).

They parse; every UPLOAD_* variable is a real setting and the values build a valid Settings;
probe paths are app routes; image, port, user and commands agree with the Dockerfile and the
CLI; every pod runs non-root on a read-only root with writable volumes where the app writes;
the HPA, PDBs and Service select what exists; and the ingress-nginx example's annotations are
exactly what ``upload-service nginx-config --ingress-annotations`` renders from the base's
ConfigMap."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from fastapi import routing

from upload_service.cli import build_parser
from upload_service.app import create_app
from upload_service.nginxconf import INTERNAL_PATHS, ingress_annotations
from upload_service.settings import ServerSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
BASE = K8S / "base"
INGRESS = K8S / "examples" / "ingress-nginx"
WORKLOADS = {"Deployment", "Job", "StatefulSet", "DaemonSet"}


@pytest.fixture(autouse=True)
def no_upload_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [k for k in os.environ if k.startswith("UPLOAD_")]:
        monkeypatch.delenv(name)
    yield


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def base_objects() -> list[dict[str, Any]]:
    kustomization = load(BASE / "kustomization.yaml")[0]
    return [doc for name in kustomization["resources"] for doc in load(BASE / name)]


def of_kind(kind: str, objects: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    return [o for o in (objects if objects is not None else base_objects()) if o["kind"] == kind]


def by_name(kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in of_kind(kind) if o["metadata"]["name"] == name]
    return found


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return [(o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in base_objects() if o["kind"] in WORKLOADS]


def containers() -> list[tuple[str, dict[str, Any]]]:
    return [(name, c) for name, spec in pod_specs() for c in spec.get("initContainers", []) + spec["containers"]]


def config_data() -> dict[str, str]:
    return by_name("ConfigMap", "upload-service-config")["data"]  # type: ignore[no-any-return]


def example_secret() -> dict[str, str]:
    return load(K8S / "examples" / "secret.example.yaml")[0]["stringData"]  # type: ignore[no-any-return]


def dockerfile() -> dict[str, list[str]]:
    """The Dockerfile's instructions (continuation lines joined), by keyword."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.setdefault(keyword.upper(), []).append(rest.strip())
    return found


def dockerfile_port() -> int:
    (expose,) = dockerfile()["EXPOSE"]
    return int(expose.split("/")[0])


def dockerfile_env() -> dict[str, str]:
    env = {}
    for line in dockerfile().get("ENV", []):
        for token in shlex.split(line):
            name, sep, value = token.partition("=")
            if sep:
                env[name] = value
    return env


def listening_port() -> int:
    """Where ``serve`` listens in the pods: the ConfigMap's port, else the image's, else the
    setting's default (the manifests' args pass no ``--port``)."""
    port = config_data().get("UPLOAD_SERVER__PORT") or dockerfile_env().get("UPLOAD_SERVER__PORT")
    return int(port) if port else ServerSettings().port


def setting_names() -> set[str]:
    """Every UPLOAD_<SECTION>__<FIELD> the Settings model reads."""
    names = set()
    for section, info in Settings.model_fields.items():
        for field in info.annotation.model_fields:  # type: ignore[union-attr]
            names.add(f"UPLOAD_{section.upper()}__{field.upper()}")
    return names


def env_names() -> set[str]:
    names = set(config_data()) | set(example_secret())
    for _, container in containers():
        names |= {e["name"] for e in container.get("env", [])}
    return {n for n in names if n.startswith("UPLOAD_")}


def test_every_manifest_parses_and_every_base_file_is_listed() -> None:
    for path in K8S.rglob("*.yaml"):
        for doc in load(path):
            assert {"apiVersion", "kind"} <= set(doc), path
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], path
    listed = set(load(BASE / "kustomization.yaml")[0]["resources"])
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    kinds = {o["kind"] for o in base_objects()}
    assert {"ConfigMap", "Deployment", "Service", "Job", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds


def test_every_variable_is_a_real_setting_and_the_values_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = sorted(env_names() - setting_names())
    assert unknown == [], f"not settings (typo, or a setting that was removed): {unknown}"
    assert not set(config_data()) & set(example_secret()), "a variable set in both the ConfigMap and the Secret"
    for name, value in {**config_data(), **example_secret()}.items():
        monkeypatch.setenv(name, value.replace("REPLACE", "x" * 40) if name == "UPLOAD_TOKENS__SECRETS" else value)
    settings = Settings()  # raises if a value is refused
    assert settings.server.port == listening_port()
    assert settings.storage.endpoint_url and settings.database.url.startswith("postgresql")
    secret_like = [n for n in config_data() if re.search(r"PASSWORD|SECRET|ACCESS_KEY|DATABASE__URL|TOKENS__SECRETS", n)]
    assert secret_like == [], "secrets belong in the Secret, not the ConfigMap"


def test_every_container_gets_the_settings_from_the_configmap_and_the_secret() -> None:
    for name, container in containers():
        refs = {(k, v["name"]) for e in container["envFrom"] for k, v in e.items()}
        assert refs == {("configMapRef", "upload-service-config"), ("secretRef", "upload-service-secrets")}, name


def test_probes_hit_real_routes_on_the_named_port() -> None:
    routes = app_paths()
    api = by_name("Deployment", "upload-service-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port_names = {p["name"] for p in api["ports"]}
    for _, container in containers():
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["path"] in routes, probe
                assert container[probe]["httpGet"]["port"] in port_names


def test_image_port_user_and_commands_agree_with_the_dockerfile_and_the_cli() -> None:
    port = listening_port()
    assert dockerfile_port() == port, "the Dockerfile EXPOSEs another port than serve listens on"
    api = by_name("Deployment", "upload-service-api")
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert "--port" not in container["args"]
    assert api["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    user = dockerfile()["USER"][-1]
    assert user not in ("root", "0") and not user.startswith("0:")

    kustomization = load(BASE / "kustomization.yaml")[0]
    (image,) = kustomization["images"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for name, c in containers():
        assert c["image"] == image["name"], name
        program, command = c["args"][:2]
        assert program in scripts and command in commands, (name, c["args"])
        build_parser().parse_args(c["args"][1:])  # every flag exists
    assert "upload-service" in dockerfile()["CMD"][-1]  # the same program the manifests run


def test_one_worker_deployment_per_queue() -> None:
    data = config_data()
    queues = {data.get("UPLOAD_QUEUE__IMAGE_QUEUE", "images"), data.get("UPLOAD_QUEUE__PDF_QUEUE", "pdfs")}
    served = []
    for name, c in containers():
        if c["args"][1] == "worker":
            served.append(c["args"][c["args"].index("--queues") + 1])
    assert sorted(served) == sorted(queues)


def test_pods_are_locked_down_and_write_only_to_volumes() -> None:
    data = config_data()
    writable = [PurePosixPath(data["UPLOAD_SPOOL__DIR"]), PurePosixPath(data["UPLOAD_AUDIT__JOURNAL_PATH"]).parent, PurePosixPath("/tmp")]
    for name, spec in pod_specs():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], name
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], name
            assert c["resources"]["limits"]["memory"], name
            mounts = {PurePosixPath(m["mountPath"]): m["name"] for m in c.get("volumeMounts", [])}
            for m in mounts.values():
                assert "emptyDir" in volumes[m] and volumes[m]["emptyDir"].get("sizeLimit"), (name, m)
            needed = writable if c["args"][1] in ("serve", "worker") else [PurePosixPath("/tmp")]
            for path in needed:
                assert any(path == mount or mount in path.parents for mount in mounts), (name, path)


def test_service_hpa_and_pdbs_select_what_exists() -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    for d in deployments.values():
        assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()

    def selected(selector: dict[str, str]) -> list[str]:
        return [n for n, d in deployments.items() if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]

    service = by_name("Service", "upload-service-api")
    assert selected(service["spec"]["selector"]) == ["upload-service-api"]
    api_ports = {p["name"] for p in deployments["upload-service-api"]["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= api_ports

    (hpa,) = of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "upload-service-api"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2  # the PDB's minAvailable 1 can then always be met

    covered = set()
    for pdb in of_kind("PodDisruptionBudget"):
        matched = selected(pdb["spec"]["selector"]["matchLabels"])
        assert len(matched) == 1, pdb["metadata"]["name"]
        covered |= set(matched)
    assert covered == set(deployments)


def settings_sections(env: dict[str, str]) -> dict[str, dict[str, str]]:
    """``UPLOAD_A__B=v`` as ``{"a": {"b": "v"}}`` (what pydantic-settings does with the environment)."""
    sections: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        section, field = name.removeprefix("UPLOAD_").lower().split("__", 1)
        sections.setdefault(section, {})[field] = value
    return sections


def app_paths() -> set[str]:
    """Every path the app serves (routers flattened)."""
    return {getattr(c, "path_format", "") for c in routing.iter_route_contexts(create_app(Settings()).routes)}


def ingress_env() -> dict[str, str]:
    return {k: v for k, v in config_data().items() if k.startswith(("UPLOAD_NGINX__", "UPLOAD_LIMITS__"))}


def test_the_ingress_example_is_the_commands_output() -> None:
    env = {"PATH": os.environ.get("PATH", ""), **ingress_env()}
    result = subprocess.run(
        [sys.executable, "-m", "upload_service", "nginx-config", "--ingress-annotations"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=True,
    )
    rendered = yaml.safe_load(result.stdout)
    ingresses = {i["metadata"]["name"]: i for i in load(INGRESS / "ingress.yaml") if i["kind"] == "Ingress"}
    assert ingresses["upload-service-uploads"]["metadata"]["annotations"] == rendered["uploads"]
    assert ingresses["upload-service-api"]["metadata"]["annotations"] == rendered["api"]
    (controller,) = load(INGRESS / "controller-configmap.yaml")
    assert controller["data"] == rendered["controller"]

    assert rendered == ingress_annotations(Settings(**settings_sections(ingress_env())))
    uploads = rendered["uploads"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert uploads[prefix + "proxy-body-size"] == ingress_env()["UPLOAD_LIMITS__MAX_BODY_BYTES"]
    assert uploads[prefix + "proxy-request-buffering"] == "off"
    assert rendered["api"][prefix + "proxy-body-size"] == ingress_env()["UPLOAD_NGINX__MAX_JSON_BODY_BYTES"]
    assert uploads[prefix + "proxy-read-timeout"] == ingress_env()["UPLOAD_NGINX__PROXY_READ_TIMEOUT_SECONDS"]


def test_the_ingress_exposes_the_public_routes_and_no_internal_one() -> None:
    paths = [
        (p["path"], p["pathType"])
        for i in load(INGRESS / "ingress.yaml") if i["kind"] == "Ingress"
        for rule in i["spec"]["rules"] for p in rule["http"]["paths"]
    ]
    assert ("/v1/uploads", "Exact") in paths

    def exposed(route: str) -> bool:
        return any(route == path or (kind == "Prefix" and route.startswith(path.rstrip("/") + "/")) for path, kind in paths)

    app_routes = app_paths()
    internal = [r for r in app_routes if r.startswith(INTERNAL_PATHS) or r in ("/livez", "/readyz")]
    public = [r for r in app_routes if r not in internal]
    assert [r for r in internal if exposed(r)] == []
    assert [r for r in public if not exposed(r.replace("{", "x").replace("}", ""))] == []


def test_the_worker_autoscaling_example_targets_the_workers_by_queue_metric() -> None:
    scaled = load(K8S / "examples" / "keda" / "scaledobject.yaml")
    targets = {s["spec"]["scaleTargetRef"]["name"] for s in scaled}
    workers = {n for n, c in containers() if c["args"][1] == "worker"}
    assert targets == workers
    queries = [t["metadata"].get("query", "") for s in scaled for t in s["spec"]["triggers"]]
    assert any("upload_queue_depth" in q for q in queries)
