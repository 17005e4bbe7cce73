"""Webhook deliveries driven from a test: settings with a sealing key and short retries, an
endpoint added for a tenant, an in-process dispatcher run until every delivery settled."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from tests.fixtures.app import LiveServer
from upload_service.container import build_audit_writer
from upload_service.db.engine import session_scope
from upload_service.db.webhook_models import WebhookDelivery, WebhookEvent
from upload_service.jobqueue import connect
from upload_service.settings import WebhookSettings
from upload_service.webhooks import admin
from upload_service.webhooks.dispatcher import Dispatcher
from upload_service.webhooks.metrics_sink import redis_outcome_counter
from upload_service.webhooks.secretbox import load_secret_box

WEBHOOK_KEY = secrets.token_urlsafe(32)


def webhook_settings(**changes: Any) -> WebhookSettings:
    values: dict[str, Any] = {
        "secret_keys": {"test": WEBHOOK_KEY},
        "allow_private_destinations": True,  # the receiver is on loopback
        "retry_base_seconds": 0.2,
        "retry_max_interval_seconds": 0.4,
        "connect_timeout_seconds": 1,
        "read_timeout_seconds": 2,
        "attempt_timeout_seconds": 3,
        "lease_seconds": 4,
        "poll_interval_seconds": 0.1,
        **changes,
    }
    return WebhookSettings(**values)


def add_endpoint(server: LiveServer, tenant: str, url: str, settings: WebhookSettings, events: str | None = None) -> tuple[str, str]:
    with session_scope(server.sessions) as session:
        new = admin.add_endpoint(session, settings, load_secret_box(settings), tenant, url, events)
        return new.endpoint.id, new.secret


def make_dispatcher(server: LiveServer, settings: WebhookSettings, **kwargs: Any) -> Dispatcher:
    return Dispatcher(
        settings, server.sessions, load_secret_box(settings),
        audit=build_audit_writer(server.settings, server.sessions, None),
        on_outcome=redis_outcome_counter(connect(server.settings.redis)), **kwargs,
    )


def drain(dispatcher: Dispatcher, done: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "deliveries did not finish in time"
        if not dispatcher.run_once():
            time.sleep(0.05)


def deliveries_of(server: LiveServer, tenant: str) -> list[tuple[WebhookDelivery, WebhookEvent]]:
    with server.sessions() as session:
        rows = session.execute(
            select(WebhookDelivery, WebhookEvent)
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .where(WebhookDelivery.tenant == tenant)
            .order_by(WebhookDelivery.id)
        ).all()
    return [(r[0], r[1]) for r in rows]


def settled(server: LiveServer, tenant: str) -> Callable[[], bool]:
    return lambda: all(d.status != "pending" for d, _ in deliveries_of(server, tenant))


def upload(client: Any, data: bytes, name: str, media_type: str) -> str:
    response = client.upload(data, name, media_type)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])
