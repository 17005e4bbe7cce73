"""``/v1/webhooks`` and ``upload-service webhooks``: endpoints per tenant (own tenant only, 404
for others' ids), the secret shown once, destinations checked when added, rotation with an
overlap, deliveries with their attempts, redelivery; every answer as the OpenAPI document says."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from tests.fixtures.app import LiveServer
from tests.integration.contract import check_against
from tests.integration.webhookflow import WEBHOOK_KEY, drain, make_dispatcher, settled, upload, webhook_settings
from tests.integration.webhookreceiver import Receiver
from tests.samples import png_bytes
from upload_service.settings import Settings


def test_endpoints_are_per_tenant_and_deliveries_visible(server_factory: Any, receiver: Receiver) -> None:
    api: LiveServer = server_factory(webhooks={"secret_keys": {"test": WEBHOOK_KEY}, "allowed_networks": ["127.0.0.1/32"]})
    schema = httpx.get(api.url + "/openapi.json", timeout=10).json()
    owner, other = api.client("admin"), api.client("admin")
    uploader = api.client("upload,read", tenant=owner.tenant)

    def call(client: Any, method: str, path: str, status: int, **kwargs: Any) -> httpx.Response:
        response = client.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        check_against(schema, response)
        return response

    for url in ("http://10.0.0.1/hook", "http://169.254.169.254/latest", "http://[::1]:9/x", "ftp://example.com/"):
        refused = call(owner, "POST", "/v1/webhooks", 422, json={"url": url})
        assert refused.json()["error"]["code"] == "VALIDATION_FAILED"
    call(owner, "POST", "/v1/webhooks", 422, json={"url": receiver.url, "events": ["upload.exploded"]})
    call(uploader, "POST", "/v1/webhooks", 403, json={"url": receiver.url})

    created = call(owner, "POST", "/v1/webhooks", 201, json={"url": receiver.url, "events": ["upload.accepted"]})
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_") and created.headers["location"] == f"/v1/webhooks/{endpoint['id']}"
    receiver.secret = first_secret = endpoint["secret"]
    listed = call(owner, "GET", "/v1/webhooks", 200)
    assert [e["id"] for e in listed.json()["endpoints"]] == [endpoint["id"]]
    assert "secret" not in listed.text.replace("previous_secret_expires_at", "")  # shown once only
    assert call(owner, "GET", f"/v1/webhooks/{endpoint['id']}", 200).json()["events"] == ["upload.accepted"]

    # Another tenant's admin learns nothing: every id answers 404, its own list is empty.
    assert call(other, "GET", "/v1/webhooks", 200).json() == {"endpoints": []}
    for method, path in [
        ("GET", f"/v1/webhooks/{endpoint['id']}"), ("DELETE", f"/v1/webhooks/{endpoint['id']}"),
        ("POST", f"/v1/webhooks/{endpoint['id']}/rotate-secret"), ("GET", f"/v1/webhooks/{endpoint['id']}/deliveries"),
    ]:
        assert call(other, method, path, 404).json()["error"]["code"] == "NOT_FOUND"

    settings = webhook_settings(allow_private_destinations=False, allowed_networks=["127.0.0.1/32"])
    dispatcher = make_dispatcher(api, settings)
    upload(uploader, png_bytes(), "a.png", "image/png")
    drain(dispatcher, settled(api, owner.tenant))
    [first] = receiver.delivered()
    assert first.verified and first.type == "upload.accepted"

    rotated = call(owner, "POST", f"/v1/webhooks/{endpoint['id']}/rotate-secret", 200).json()
    assert rotated["secret"] != first_secret and rotated["previous_secret_expires_at"]
    receiver.secret = rotated["secret"]
    upload(uploader, png_bytes(), "b.png", "image/png")
    drain(dispatcher, settled(api, owner.tenant))
    second = receiver.delivered()[-1]
    assert second.verified  # with the new secret...
    Webhook(first_secret).verify(second.payload_bytes, second.headers)  # ...and the old one, during the overlap

    deliveries = call(owner, "GET", f"/v1/webhooks/{endpoint['id']}/deliveries", 200).json()["deliveries"]
    assert [d["status"] for d in deliveries] == ["delivered", "delivered"]
    assert deliveries[0]["attempt_log"][0]["status_code"] == 200
    event_id = deliveries[-1]["event_id"]
    assert call(other, "POST", f"/v1/webhooks/events/{event_id}/redeliver", 404)
    assert call(owner, "POST", f"/v1/webhooks/events/{event_id}/redeliver", 202).json()["pending"] == 1
    drain(dispatcher, settled(api, owner.tenant))
    assert [r.webhook_id for r in receiver.delivered()].count(event_id) == 2  # sent again, same id

    call(owner, "DELETE", f"/v1/webhooks/{endpoint['id']}", 204)
    call(owner, "GET", f"/v1/webhooks/{endpoint['id']}", 404)
    audit = call(owner, "GET", "/v1/audit", 200, params={"action": "webhook:endpoint_added"}).json()["events"]
    assert [e["details"]["endpoint_id"] for e in audit] == [endpoint["id"]]


def test_without_a_key_endpoints_cannot_be_added(server: LiveServer, receiver: Receiver) -> None:
    response = server.client("admin").request("POST", "/v1/webhooks", json={"url": receiver.url})
    assert response.status_code == 503 and response.json()["error"]["code"] == "DEPENDENCY_UNAVAILABLE"
    done = _cli(server.settings, "add", "--tenant", "t1", "--url", receiver.url)
    assert done.returncode == 2 and "not configured" in done.stdout


def test_cli_add_list_rotate_remove(server: LiveServer, receiver: Receiver) -> None:
    settings = Settings(**{**server.settings.model_dump(), "webhooks": webhook_settings().model_dump()})
    tenant = server.client().tenant
    added = _cli(settings, "add", "--tenant", tenant, "--url", receiver.url, "--events", "upload.done,upload.failed")
    assert added.returncode == 0, added.stdout + added.stderr
    lines = added.stdout.splitlines()
    endpoint_id = lines[0].split()[3]
    assert endpoint_id.startswith("we_") and lines[-1].startswith("whsec_")
    listed = _cli(settings, "list", "--tenant", tenant).stdout
    assert endpoint_id in listed and "upload.done,upload.failed" in listed and "whsec_" not in listed
    rotated = _cli(settings, "rotate-secret", endpoint_id).stdout.splitlines()
    assert rotated[-1].startswith("whsec_") and rotated[-1] != lines[-1]
    refused = _cli(settings.model_copy(update={"webhooks": webhook_settings(allow_private_destinations=False)}),
                   "add", "--tenant", tenant, "--url", "http://169.254.169.254/")
    assert refused.returncode == 2 and "cloud metadata" in refused.stdout
    assert _cli(settings, "remove", endpoint_id).returncode == 0
    assert endpoint_id not in _cli(settings, "list", "--tenant", tenant).stdout
    assert _cli(settings, "remove", endpoint_id).returncode == 2


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "upload_service", "webhooks", *args],
        env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=60,
    )
