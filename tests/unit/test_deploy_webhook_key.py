"""The Kubernetes example Secret carries the webhook key to the API (sealing endpoint secrets)
and to every worker (each runs a dispatcher thread), and the placeholder's shape loads as the
setting: one key id, a key the service would accept once REPLACE is swapped for real bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from upload_service.settings import WebhookSettings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def test_the_secret_carries_a_webhook_key_every_app_container_reads() -> None:
    secret = yaml.safe_load((K8S / "examples" / "secret.example.yaml").read_text())
    keys = json.loads(secret["stringData"]["UPLOAD_WEBHOOKS__SECRET_KEYS"])
    assert list(keys) == ["k1"] and keys["k1"].startswith("REPLACE")
    settings = WebhookSettings(secret_keys={"k1": keys["k1"].replace("REPLACE", "x" * 40)})
    assert list(settings.secret_keys) == ["k1"]
    with pytest.raises(ValueError):
        WebhookSettings(secret_keys={"k1": "short"})  # a weak key is refused, never run with
    readers = set()
    for name in ("api-deployment.yaml", "worker-images-deployment.yaml", "worker-pdfs-deployment.yaml"):
        deployment = yaml.safe_load((K8S / "base" / name).read_text())
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            refs = {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
            if secret["metadata"]["name"] in refs:
                readers.add(name)
    assert readers == {"api-deployment.yaml", "worker-images-deployment.yaml", "worker-pdfs-deployment.yaml"}
