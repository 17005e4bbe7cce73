"""Upload tokens: the token that created an upload, and each token's use count.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("token_id", sa.String(32)))
        batch.create_index("ix_uploads_token_id", ["token_id"])
    op.create_table(
        "upload_token_uses",
        sa.Column("token_id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("uses", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_upload_token_uses_expires_at", "upload_token_uses", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_upload_token_uses_expires_at", table_name="upload_token_uses")
    op.drop_table("upload_token_uses")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_index("ix_uploads_token_id")
        batch.drop_column("token_id")
