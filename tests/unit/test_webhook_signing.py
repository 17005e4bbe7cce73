"""Signatures, secrets at rest and the retry schedule, checked against the ``standardwebhooks``
package (the verifier consumers use), not against our own signer."""

from __future__ import annotations

import random
import time
from datetime import datetime, timezone

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from upload_service.settings import WebhookSettings
from upload_service.webhooks.dispatcher import backoff_seconds
from upload_service.webhooks.events import build_body, new_event_id, new_secret, parse_event_types, sign
from upload_service.webhooks.secretbox import WebhookKeyError, load_secret_box

KEY = "k" * 32


def headers(secrets: list[str], event_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": event_id, "webhook-timestamp": str(timestamp), "webhook-signature": sign(secrets, event_id, timestamp, body)}


def test_standardwebhooks_verifies_our_signature_and_refuses_tampering() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    body = build_body("upload.done", datetime.now(timezone.utc), {"id": "u1", "filename": "ünïcode.png"}).encode()
    event_id = new_event_id()
    assert Webhook(secret).verify(body, headers([secret], event_id, body))["data"]["id"] == "u1"
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"u1", b"u2"), headers([secret], event_id, body))
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers([secret], event_id, body))
    with pytest.raises(WebhookVerificationError):  # replayed long after: the timestamp is signed
        Webhook(secret).verify(body, headers([secret], event_id, body, timestamp=int(time.time()) - 3600))


def test_during_a_rotation_both_secrets_verify() -> None:
    old, new = new_secret(), new_secret()
    body = b'{"type":"upload.accepted"}'
    signed = headers([new, old], "msg_1", body)
    assert len(signed["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(body, signed)
    Webhook(new).verify(body, signed)


def test_secrets_are_sealed_per_endpoint_and_keys_rotate() -> None:
    box = load_secret_box(WebhookSettings(secret_keys={"k1": KEY}))
    secret = new_secret()
    sealed = box.seal("we_1", secret)
    assert secret not in sealed and sealed.startswith("k1:")
    assert box.open("we_1", sealed) == secret
    with pytest.raises(WebhookKeyError):
        box.open("we_2", sealed)  # bound to its endpoint
    both = load_secret_box(WebhookSettings(secret_keys={"k1": KEY, "k2": "z" * 32}, active_key_id="k2"))
    assert both.open("we_1", sealed) == secret and both.seal("we_1", secret).startswith("k2:")
    with pytest.raises(WebhookKeyError):
        load_secret_box(WebhookSettings(secret_keys={"k2": "z" * 32})).open("we_1", sealed)


def test_no_key_or_a_short_one_is_refused() -> None:
    with pytest.raises(WebhookKeyError, match="no webhook secret key"):
        load_secret_box(WebhookSettings())
    with pytest.raises(ValueError):
        WebhookSettings(secret_keys={"k1": "short"})


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    settings = WebhookSettings(retry_base_seconds=5, retry_max_interval_seconds=3600)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 5), (2, 10), (3, 20), (10, 2560), (11, 3600), (30, 3600)]:
        waits = [backoff_seconds(attempt, settings, rng) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jittered


def test_event_type_lists() -> None:
    assert parse_event_types(None) == ["upload.accepted", "upload.done", "upload.failed", "upload.deleted"]
    assert parse_event_types("upload.failed, upload.done") == ["upload.done", "upload.failed"]
    with pytest.raises(ValueError):
        parse_event_types("upload.exploded")
    with pytest.raises(ValueError):
        parse_event_types("")
