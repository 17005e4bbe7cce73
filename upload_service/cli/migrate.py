"""``upload-service migrate``: apply the Alembic migrations that ship with the package (db/migrate.py)."""

from __future__ import annotations

from upload_service.db.migrate import upgrade_to_head
from upload_service.settings import Settings


def run(settings: Settings) -> int:
    upgrade_to_head(settings.database)
    print("database is at the latest revision")
    return 0
