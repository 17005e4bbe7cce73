"""Apply the Alembic migrations that ship inside the package (``upload-service migrate``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from upload_service.settings import DatabaseSettings

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(settings: DatabaseSettings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_settings"] = settings
    return config


def upgrade_to_head(settings: DatabaseSettings) -> None:
    command.upgrade(alembic_config(settings), "head")
