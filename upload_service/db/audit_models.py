"""Audit tables, on the same ``Base`` as the rest. Changing one means a new Alembic revision.

``audit_events`` is append-only: each row carries its place in its tenant's hash chain
(``chain``, ``seq``, ``prev_hash``, ``hash``). ``audit_chain_heads`` holds one row per chain —
the last ``seq`` and hash — which writers lock to serialize appends, and which lets
verification notice rows deleted from the end of a chain.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from upload_service.db.models import Base

#: A 64-bit id on PostgreSQL; SQLite autoincrements only a column typed exactly ``INTEGER``.
AUDIT_ID = BigInteger().with_variant(Integer, "sqlite")


class AuditEventRow(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("event_id", name="uq_audit_events_event_id"),
        UniqueConstraint("chain", "seq", name="uq_audit_events_chain_seq"),
        Index("ix_audit_events_tenant_id", "tenant", "id"),
        Index("ix_audit_events_upload_id", "upload_id"),
        Index("ix_audit_events_request_id", "request_id"),
        Index("ix_audit_events_action", "action"),
        Index("ix_audit_events_occurred_at", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(AUDIT_ID, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime]
    tenant: Mapped[str | None] = mapped_column(String(63))
    key_id: Mapped[str | None] = mapped_column(String(64))
    client_addr: Mapped[str | None] = mapped_column(String(255))
    request_id: Mapped[str | None] = mapped_column(String(128))
    upload_id: Mapped[str | None] = mapped_column(String(64))
    sha256: Mapped[str | None] = mapped_column(String(64))
    declared_type: Mapped[str | None] = mapped_column(String(255))
    detected_type: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int | None] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any] | None]
    #: The tenant, or ``-`` for events without one (tenant names never start with ``-``).
    chain: Mapped[str] = mapped_column(String(63))
    seq: Mapped[int] = mapped_column(BigInteger)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """The end of one chain. Keyed by chain name rather than tenant: NULL can't be a key."""

    __tablename__ = "audit_chain_heads"

    chain: Mapped[str] = mapped_column(String(63), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
