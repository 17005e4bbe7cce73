"""Audit trail: hash-chained events and one head row per chain.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
#: 64-bit on PostgreSQL; SQLite autoincrements only a column typed exactly INTEGER.
AUDIT_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", AUDIT_ID, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("tenant", sa.String(63)),
        sa.Column("key_id", sa.String(64)),
        sa.Column("client_addr", sa.String(255)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("upload_id", sa.String(64)),
        sa.Column("sha256", sa.String(64)),
        sa.Column("declared_type", sa.String(255)),
        sa.Column("detected_type", sa.String(255)),
        sa.Column("size", sa.BigInteger),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(255)),
        sa.Column("details", sa.JSON),
        sa.Column("chain", sa.String(63), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("event_id", name="uq_audit_events_event_id"),
        sa.UniqueConstraint("chain", "seq", name="uq_audit_events_chain_seq"),
    )
    op.create_index("ix_audit_events_tenant_id", "audit_events", ["tenant", "id"])
    op.create_index("ix_audit_events_upload_id", "audit_events", ["upload_id"])
    op.create_index("ix_audit_events_request_id", "audit_events", ["request_id"])
    op.create_index("ix_audit_events_action", "audit_events", ["action"])
    op.create_index("ix_audit_events_occurred_at", "audit_events", ["occurred_at"])
    op.create_table(
        "audit_chain_heads",
        sa.Column("chain", sa.String(63), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_chain_heads")
    for name in ("occurred_at", "action", "request_id", "upload_id", "tenant_id"):
        op.drop_index(f"ix_audit_events_{name}", table_name="audit_events")
    op.drop_table("audit_events")
