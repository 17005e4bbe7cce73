"""Endpoints and deliveries, as the CLI and the ``/v1/webhooks`` API manage them.

Every function takes the tenant explicitly (None only for the operator's CLI listing all), and a
tenant asking about another tenant's endpoint or event gets ``NOT_FOUND``, as for uploads.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from upload_service.db import webhooks_repo
from upload_service.db.repository import utcnow
from upload_service.db.webhook_models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from upload_service.errors import ErrorCode, ServiceError
from upload_service.settings import WebhookSettings
from upload_service.webhooks.events import format_time, new_secret, parse_event_types
from upload_service.webhooks.http import DestinationPolicy, DestinationRefused, Resolver, check_url, system_resolver
from upload_service.webhooks.secretbox import SecretBox, WebhookKeyError, load_secret_box


@dataclass(frozen=True)
class NewSecret:
    endpoint: WebhookEndpoint
    #: ``whsec_...``: shown once, never stored in clear.
    secret: str


def secret_box_or_error(settings: WebhookSettings) -> SecretBox:
    """The keys endpoint secrets are sealed with, or 503 naming the missing setting."""
    try:
        return load_secret_box(settings)
    except WebhookKeyError as exc:
        raise ServiceError(
            ErrorCode.DEPENDENCY_UNAVAILABLE, "webhooks are not configured on this server", internal=str(exc)
        ) from None


def add_endpoint(
    session: Session,
    settings: WebhookSettings,
    box: SecretBox,
    tenant: str,
    url: str,
    events: str | list[str] | None = None,
    *,
    resolver: Resolver = system_resolver,
) -> NewSecret:
    try:
        subscribed = parse_event_types(events)
        check_url(url, DestinationPolicy.of(settings), resolver)
    except (ValueError, DestinationRefused) as exc:
        raise ServiceError(ErrorCode.VALIDATION_FAILED, f"refused endpoint: {exc}") from None
    if webhooks_repo.count_endpoints(session, tenant) >= settings.max_endpoints_per_tenant:
        raise ServiceError(
            ErrorCode.VALIDATION_FAILED, f"a tenant has at most {settings.max_endpoints_per_tenant} webhook endpoints"
        )
    now = utcnow()
    endpoint_id = "we_" + secrets.token_hex(12)
    secret = new_secret()
    endpoint = WebhookEndpoint(
        id=endpoint_id, tenant=tenant, url=url, events=subscribed, secret_box=box.seal(endpoint_id, secret),
        previous_secret_box=None, previous_secret_expires_at=None, created_at=now, updated_at=now,
    )
    webhooks_repo.add_endpoint(session, endpoint)
    return NewSecret(endpoint, secret)


def find_endpoint(session: Session, tenant: str | None, endpoint_id: str) -> WebhookEndpoint:
    endpoint = (
        webhooks_repo.get_endpoint_any_tenant(session, endpoint_id)
        if tenant is None
        else webhooks_repo.get_endpoint(session, tenant, endpoint_id)
    )
    if endpoint is None:
        raise ServiceError(ErrorCode.NOT_FOUND, "no such webhook endpoint")
    return endpoint


def remove_endpoint(session: Session, tenant: str | None, endpoint_id: str) -> WebhookEndpoint:
    endpoint = find_endpoint(session, tenant, endpoint_id)
    webhooks_repo.remove_endpoint(session, endpoint)
    return endpoint


def rotate_secret(
    session: Session, settings: WebhookSettings, box: SecretBox, tenant: str | None, endpoint_id: str
) -> NewSecret:
    """A new secret; the old one keeps signing too (a second signature) for
    ``rotation_overlap_seconds``, so receivers can switch without missing a delivery."""
    endpoint = find_endpoint(session, tenant, endpoint_id)
    now = utcnow()
    secret = new_secret()
    if settings.rotation_overlap_seconds > 0:
        endpoint.previous_secret_box = endpoint.secret_box
        endpoint.previous_secret_expires_at = now + timedelta(seconds=settings.rotation_overlap_seconds)
    else:
        endpoint.previous_secret_box = None
        endpoint.previous_secret_expires_at = None
    endpoint.secret_box = box.seal(endpoint.id, secret)
    endpoint.updated_at = now
    session.flush()
    return NewSecret(endpoint, secret)


def reencrypt(session: Session, box: SecretBox) -> int:
    """Seal every endpoint secret with the active key (after adding a new key)."""
    changed = 0
    for endpoint in webhooks_repo.list_endpoints(session):
        for column in ("secret_box", "previous_secret_box"):
            sealed = getattr(endpoint, column)
            if sealed and box.key_id_of(sealed) != box.active_key_id:
                setattr(endpoint, column, box.seal(endpoint.id, box.open(endpoint.id, sealed)))
                changed += 1
    session.flush()
    return changed


def redeliver(session: Session, tenant: str | None, event_id: str, endpoint_id: str | None = None) -> int:
    """Send an event again (its dead or delivered deliveries become pending, due now)."""
    event = webhooks_repo.get_event(session, tenant, event_id)
    if event is None:
        raise ServiceError(ErrorCode.NOT_FOUND, "no such webhook event")
    if endpoint_id is not None:
        find_endpoint(session, event.tenant, endpoint_id)
    return webhooks_repo.requeue_event(session, event.id, utcnow(), endpoint_id=endpoint_id)


def event_of(session: Session, tenant: str | None, event_id: str) -> WebhookEvent:
    event = webhooks_repo.get_event(session, tenant, event_id)
    if event is None:
        raise ServiceError(ErrorCode.NOT_FOUND, "no such webhook event")
    return event


# --- views --------------------------------------------------------------------------------


def endpoint_view(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "tenant": endpoint.tenant,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "created_at": format_time(endpoint.created_at),
        "updated_at": format_time(endpoint.updated_at),
        "previous_secret_expires_at": _time(endpoint.previous_secret_expires_at),
    }


def delivery_views(
    session: Session, rows: list[tuple[WebhookDelivery, WebhookEvent]], *, with_attempts: bool = True
) -> list[dict[str, Any]]:
    attempts = webhooks_repo.attempts_of(session, [d.id for d, _ in rows]) if with_attempts else {}
    return [_delivery_view(d, e, attempts.get(d.id, [])) for d, e in rows]


def _delivery_view(delivery: WebhookDelivery, event: WebhookEvent, attempts: list[WebhookAttempt]) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": event.id,
        "type": event.type,
        "upload_id": event.upload_id,
        "endpoint_id": delivery.endpoint_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": _time(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created_at": format_time(delivery.created_at),
        "finished_at": _time(delivery.finished_at),
        "attempt_log": [
            {
                "at": format_time(a.attempted_at), "outcome": a.outcome, "status_code": a.status_code,
                "latency_ms": a.latency_ms, "error": a.error,
            }
            for a in attempts
        ],
    }


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None
