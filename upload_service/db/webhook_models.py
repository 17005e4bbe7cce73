"""Webhook tables, on the same ``Base`` as the rest. Changing one means a new Alembic revision.

- ``webhook_endpoints``: a tenant's receiver URL, the event types it subscribes to and its
  signing secret, encrypted (``secret_box`` is ``key_id:base64(nonce+ciphertext)``). After a
  rotation the previous secret is kept until ``previous_secret_expires_at`` and signs too.
- ``webhook_events``: the transactional outbox. One row per event of a tenant with at least one
  subscribed endpoint, written in the transaction of the change it reports; ``body`` is the exact
  JSON sent, so every attempt carries the same bytes under the same ``webhook-id`` (``id``).
- ``webhook_deliveries``: one row per (event, endpoint), the unit a dispatcher claims (a lease in
  ``claimed_until``), retries and finally marks ``delivered`` or ``dead``.
- ``webhook_attempts``: one row per HTTP attempt (status, latency, error).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from upload_service.db.models import Base

#: 64-bit on PostgreSQL; SQLite autoincrements only a column typed exactly ``INTEGER``.
ROW_ID = BigInteger().with_variant(Integer, "sqlite")


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]]
    secret_box: Mapped[str] = mapped_column(Text)
    previous_secret_box: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class WebhookEvent(Base):
    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_tenant_created", "tenant", "created_at"),)

    #: The ``webhook-id`` header: ``msg_`` and 26 hex characters.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    type: Mapped[str] = mapped_column(String(32))
    upload_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_order", "endpoint_id", "upload_id", "status", "id"),
        Index("ix_webhook_deliveries_event", "event_id"),
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(32), ForeignKey("webhook_events.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(String(32), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    tenant: Mapped[str] = mapped_column(String(63))
    upload_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime]
    claimed_until: Mapped[datetime | None]
    claim_token: Mapped[str | None] = mapped_column(String(32))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(512))
    last_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ROW_ID, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    attempted_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(512))
