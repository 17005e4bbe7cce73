"""The Prometheus alert rules: valid for ``promtool``, and every metric they name is one a real
API's ``/metrics`` exports (after a little real traffic: an accepted and a refused upload, a
processed job, a readiness probe). Also the bounded labels and ``upload_build_info``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.fixtures.workers import run_jobs_in_process, wait_for_status
from upload_service.metrics import service_version

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "upload-service.json"

#: PromQL words that look like identifiers but are not metric names.
_PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
    "bool", "inf", "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (strings, label matchers, ranges, grouping
    lists and function calls stripped)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"#[^\n]*", " ", text)  # PromQL comments
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        if word.lower() in _PROMQL_WORDS or text[match.end():].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def alert_rules() -> list[dict]:  # type: ignore[type-arg]
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def exported_samples(url: str) -> dict[str, list]:  # type: ignore[type-arg]
    text = httpx.get(url + "/metrics", timeout=10).text
    found: dict[str, list] = {}  # type: ignore[type-arg]
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def exported_names(url: str) -> set[str]:
    """Every series name ``/metrics`` declares (``# TYPE``), a histogram's with its suffixes. A
    labelled counter nothing has incremented yet is declared without samples: still exported."""
    names: set[str] = set()
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_metric_name_extraction() -> None:
    expr = 'sum by (code) (rate(upload_x_total{outcome="rejected", code=~"A|B"}[10m] offset 1h)) / max(upload_y) > 0.2 and absent(upload_z)'
    expr += "\n  # a comment naming words\n  or upload_w"
    assert metric_names(expr) == {"upload_x_total", "upload_y", "upload_z", "upload_w"}


def find_promtool() -> str:
    """The virtualenv's promtool (``make setup`` puts it there), else one on PATH."""
    beside = Path(sys.executable).parent / "promtool"
    promtool = str(beside) if beside.exists() else shutil.which("promtool")
    assert promtool, "promtool is missing: `make setup` fetches it (scripts/fetch-promtool.sh)"
    return promtool


def test_promtool_accepts_the_rules() -> None:
    promtool = find_promtool()
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_the_alerts_fire_on_synthetic_series() -> None:
    """deploy/prometheus/alerts.test.yml: each alert fires (with its labels and rendered
    annotations) on series shaped like a real incident, and a healthy one stays quiet."""
    promtool = find_promtool()
    result = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"], cwd=ALERTS.parent, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_the_rules_cover_what_operators_need() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    needs = {
        "5xx ratio": 'status=~"5.."',
        "rejections by code": "sum by (code) (rate(upload_uploads_total",
        "oldest job age": "upload_queue_oldest_job_age_seconds",
        "audit journal backlog": "upload_audit_journal_backlog",
        "readiness": 'route="/readyz"',
        "webhook dispatch backlog": "upload_webhook_oldest_pending_age_seconds",
    }
    for need, fragment in needs.items():
        assert any(fragment in " ".join(expr.split()) for expr in exprs.values()), need
    for rule in alert_rules():
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]



def test_every_metric_the_rules_and_dashboard_name_is_exported(server: LiveServer, client: Client) -> None:
    accepted = client.upload(samples.png_bytes(), "a.png")
    assert accepted.status_code == 202, accepted.text
    assert client.upload(samples.html_bytes(), "a.png", "image/png").status_code == 415
    assert httpx.get(server.url + "/readyz", timeout=10).status_code in (200, 503)
    run_jobs_in_process(server)
    wait_for_status(client, accepted.json()["id"], {"done"}, timeout=10)

    exported = exported_names(server.url)
    assert exported >= set(exported_samples(server.url))
    named = {name for rule in alert_rules() for name in metric_names(rule["expr"])}
    assert named, "no metric names found in the rules"
    assert sorted(named - set(exported)) == []

    dashboard = json.loads(DASHBOARD.read_text())
    panel_exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert panel_exprs
    dashboard_named = {name for expr in panel_exprs for name in metric_names(expr)}
    assert sorted(dashboard_named - set(exported)) == []


def test_labels_are_bounded_and_the_build_is_named(server: LiveServer, client: Client) -> None:
    assert client.upload(samples.html_bytes(), "a.png", "image/png").status_code == 415
    assert httpx.get(server.url + "/v1/uploads/no-such-upload", headers=client.headers, timeout=10).status_code == 404
    exported = exported_samples(server.url)

    allowed = set(server.settings.limits.allowed_types)
    types = {s.labels["type"] for s in exported["upload_uploads_total"]}
    assert "text/html" not in types and "other" in types
    assert types <= allowed | {"other", "unknown"}, types

    routes = {s.labels["route"] for s in exported["upload_http_requests_total"]}
    assert "/v1/uploads/{upload_id}" in routes and "/v1/uploads/no-such-upload" not in routes
    statuses = {(s.labels["route"], s.labels["status"]) for s in exported["upload_http_requests_total"]}
    assert ("/v1/uploads/{upload_id}", "404") in statuses and ("/v1/uploads", "415") in statuses

    build = exported["upload_build_info"]
    assert [(s.labels, s.value) for s in build] == [({"version": service_version()}, 1.0)]
    assert service_version() != "0+unknown"
