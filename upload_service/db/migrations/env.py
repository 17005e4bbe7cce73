"""Alembic environment: the engine comes from the settings the caller passed in."""

from __future__ import annotations

from alembic import context

from upload_service.db.engine import build_engine
from upload_service.db import audit_models  # noqa: F401 - registers the audit tables on Base
from upload_service.db.models import Base

config = context.config
engine = build_engine(config.attributes["database_settings"])
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
