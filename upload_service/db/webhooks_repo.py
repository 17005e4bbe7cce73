"""Webhook queries. Every function that reads a tenant's endpoints or deliveries takes the
tenant explicitly; the dispatcher's functions act on behalf of the row's own tenant."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from upload_service.db.webhook_models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

# --- endpoints ----------------------------------------------------------------------------


def add_endpoint(session: Session, endpoint: WebhookEndpoint) -> None:
    session.add(endpoint)
    session.flush()


def get_endpoint(session: Session, tenant: str, endpoint_id: str) -> WebhookEndpoint | None:
    return session.scalar(
        select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.tenant == tenant)
    )


def get_endpoint_any_tenant(session: Session, endpoint_id: str) -> WebhookEndpoint | None:
    return session.get(WebhookEndpoint, endpoint_id)


def list_endpoints(session: Session, tenant: str | None = None) -> list[WebhookEndpoint]:
    statement = select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    if tenant is not None:
        statement = statement.where(WebhookEndpoint.tenant == tenant)
    return list(session.scalars(statement))


def count_endpoints(session: Session, tenant: str) -> int:
    return session.scalar(select(func.count()).where(WebhookEndpoint.tenant == tenant)) or 0


def remove_endpoint(session: Session, endpoint: WebhookEndpoint) -> None:
    """The endpoint and every delivery (and attempt) to it; the events stay for other endpoints."""
    deliveries = select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint.id)
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(deliveries)))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
    session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.id))


# --- outbox -------------------------------------------------------------------------------


#: Built once: building the statement (and its cache key) per call cost more than running it.
#: On every accept (a group commit's batch) and every status change, so through the session's
#: connection (Core), not the ORM's result machinery.
_SUBSCRIPTIONS_OF_TENANTS = select(WebhookEndpoint.tenant, WebhookEndpoint.id, WebhookEndpoint.events).where(
    WebhookEndpoint.tenant.in_(bindparam("tenants", expanding=True))
)


def subscribed_endpoints_by_tenant(session: Session, tenants: Sequence[str], event_type: str) -> dict[str, list[str]]:
    """``subscribed_endpoint_ids`` for several tenants in one query (a group commit's batch):
    tenant -> endpoint ids."""
    found: dict[str, list[str]] = {}
    for row in session.connection().execute(_SUBSCRIPTIONS_OF_TENANTS, {"tenants": sorted(set(tenants))}):
        if event_type in (row.events or []):
            found.setdefault(row.tenant, []).append(row.id)
    return found


def subscribed_endpoint_ids(session: Session, tenant: str, event_type: str) -> list[str]:
    """The tenant's endpoints that take ``event_type`` (subscriptions are a short JSON list,
    filtered here rather than with each database's own JSON operators)."""
    return subscribed_endpoints_by_tenant(session, [tenant], event_type).get(tenant, [])


def add_events(session: Session, events: Sequence[tuple[WebhookEvent, Sequence[str]]]) -> None:
    """``add_event`` for several events: one multi-row insert per table."""
    if not events:
        return
    connection = session.connection()
    connection.execute(
        insert(WebhookEvent),
        [{"id": e.id, "tenant": e.tenant, "type": e.type, "upload_id": e.upload_id, "body": e.body,
          "created_at": e.created_at} for e, _ in events],
    )
    connection.execute(
        insert(WebhookDelivery),
        [
            {"event_id": e.id, "endpoint_id": endpoint_id, "tenant": e.tenant, "upload_id": e.upload_id,
             "status": DeliveryStatus.PENDING.value, "attempts": 0, "next_attempt_at": e.created_at,
             "created_at": e.created_at}
            for e, endpoint_ids in events
            for endpoint_id in endpoint_ids
        ],
    )


def add_event(session: Session, event: WebhookEvent, endpoint_ids: Sequence[str]) -> None:
    """The event and one pending delivery per endpoint, in the caller's transaction (Core
    inserts on the session's connection: this runs inside status changes)."""
    connection = session.connection()
    connection.execute(
        insert(WebhookEvent),
        {"id": event.id, "tenant": event.tenant, "type": event.type, "upload_id": event.upload_id,
         "body": event.body, "created_at": event.created_at},
    )
    connection.execute(
        insert(WebhookDelivery),
        [
            {"event_id": event.id, "endpoint_id": endpoint_id, "tenant": event.tenant, "upload_id": event.upload_id,
             "status": DeliveryStatus.PENDING.value, "attempts": 0, "next_attempt_at": event.created_at,
             "created_at": event.created_at}
            for endpoint_id in endpoint_ids
        ],
    )


# --- dispatching --------------------------------------------------------------------------


def claim_due(
    session: Session, now: datetime, lease_until: datetime, token: str, limit: int, *, skip_locked: bool
) -> list[int]:
    """Lease up to ``limit`` due deliveries to the caller (``token``), oldest due first.

    A delivery waits while an earlier one of the same upload to the same endpoint is pending,
    so a receiver sees an upload's events in order. Two dispatchers never hold one lease: the
    lease is a conditional UPDATE (only if unclaimed or expired), and PostgreSQL's
    ``SKIP LOCKED`` keeps concurrent claimers off each other's candidate rows."""
    earlier = aliased(WebhookDelivery)
    blocked = exists().where(
        earlier.endpoint_id == WebhookDelivery.endpoint_id,
        earlier.upload_id == WebhookDelivery.upload_id,
        earlier.status == DeliveryStatus.PENDING,
        earlier.id < WebhookDelivery.id,
    )
    statement = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now),
            ~blocked,
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    )
    if skip_locked:
        statement = statement.with_for_update(skip_locked=True, of=WebhookDelivery)
    claimed = []
    for delivery_id in session.scalars(statement).all():
        result = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == DeliveryStatus.PENDING,
                or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now),
            )
            .values(claimed_until=lease_until, claim_token=token)
        )
        if result.rowcount:
            claimed.append(delivery_id)
    return claimed


def delivery_with_event(session: Session, delivery_id: int) -> tuple[WebhookDelivery, WebhookEvent, WebhookEndpoint] | None:
    row = session.execute(
        select(WebhookDelivery, WebhookEvent, WebhookEndpoint)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.id == delivery_id)
    ).first()
    return None if row is None else (row[0], row[1], row[2])


def add_attempt(session: Session, attempt: WebhookAttempt) -> None:
    session.add(attempt)


def finish_attempt(session: Session, delivery_id: int, token: str, **values: object) -> bool:
    """Update a delivery this caller still holds the lease of; False if it lost the lease."""
    result = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.claim_token == token)
        .values(claimed_until=None, claim_token=None, **values)
    )
    return result.rowcount > 0


def delivery_exists(session: Session, delivery_id: int) -> bool:
    return session.scalar(select(WebhookDelivery.id).where(WebhookDelivery.id == delivery_id)) is not None


def prune_finished(session: Session, finished_before: datetime, limit: int = 10_000) -> int:
    """Delete up to ``limit`` deliveries finished before the cutoff, their attempts, and the
    events no delivery refers to any more; the number of deliveries deleted."""
    old = list(
        session.scalars(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.status != DeliveryStatus.PENDING, WebhookDelivery.finished_at < finished_before)
            .limit(limit)
        )
    )
    if not old:
        return 0
    events = select(WebhookDelivery.event_id).where(WebhookDelivery.id.in_(old)).distinct()
    event_ids = list(session.scalars(events))
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(old)))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(old)))
    orphan = ~exists().where(WebhookDelivery.event_id == WebhookEvent.id)
    session.execute(delete(WebhookEvent).where(WebhookEvent.id.in_(event_ids), orphan))
    return len(old)


def oldest_pending_created_at(session: Session) -> datetime | None:
    return session.scalar(select(func.min(WebhookDelivery.created_at)).where(WebhookDelivery.status == DeliveryStatus.PENDING))


def count_by_status(session: Session, statuses: Sequence[str]) -> dict[str, int]:
    rows = session.execute(
        select(WebhookDelivery.status, func.count())
        .where(WebhookDelivery.status.in_(list(statuses)))
        .group_by(WebhookDelivery.status)
    ).all()
    return {str(status): int(count) for status, count in rows}


# --- reading and redelivering -------------------------------------------------------------


def list_deliveries(
    session: Session,
    tenant: str | None,
    *,
    endpoint_id: str | None = None,
    event_id: str | None = None,
    status: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[tuple[WebhookDelivery, WebhookEvent]]:
    """Newest first; ``before_id`` pages on."""
    statement = (
        select(WebhookDelivery, WebhookEvent)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    )
    if tenant is not None:
        statement = statement.where(WebhookDelivery.tenant == tenant)
    if endpoint_id is not None:
        statement = statement.where(WebhookDelivery.endpoint_id == endpoint_id)
    if event_id is not None:
        statement = statement.where(WebhookDelivery.event_id == event_id)
    if status is not None:
        statement = statement.where(WebhookDelivery.status == status)
    if before_id is not None:
        statement = statement.where(WebhookDelivery.id < before_id)
    return [(row[0], row[1]) for row in session.execute(statement).all()]


def attempts_of(session: Session, delivery_ids: Sequence[int]) -> dict[int, list[WebhookAttempt]]:
    found: dict[int, list[WebhookAttempt]] = {i: [] for i in delivery_ids}
    if not delivery_ids:
        return found
    statement = (
        select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(list(delivery_ids))).order_by(WebhookAttempt.id)
    )
    for attempt in session.scalars(statement):
        found[attempt.delivery_id].append(attempt)
    return found


def get_event(session: Session, tenant: str | None, event_id: str) -> WebhookEvent | None:
    statement = select(WebhookEvent).where(WebhookEvent.id == event_id)
    if tenant is not None:
        statement = statement.where(WebhookEvent.tenant == tenant)
    return session.scalar(statement)


def requeue_event(session: Session, event_id: str, now: datetime, *, endpoint_id: str | None = None) -> int:
    """Make the event's finished deliveries pending again, due now, with a fresh attempt count
    and a fresh retry window (``created_at`` is when the delivery last started)."""
    statement = (
        update(WebhookDelivery)
        .where(WebhookDelivery.event_id == event_id, WebhookDelivery.status != DeliveryStatus.PENDING)
        .values(
            status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now, created_at=now, finished_at=None,
            claimed_until=None, claim_token=None,
        )
    )
    if endpoint_id is not None:
        statement = statement.where(WebhookDelivery.endpoint_id == endpoint_id)
    return session.execute(statement).rowcount
