"""Tables. Changing one means a new Alembic revision in ``migrations/versions``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UploadStatus(StrEnum):
    """An upload's life: accepted (``queued``), picked up by a worker, then one of two ends.

    ``deleting`` is internal: a DELETE marks (and commits) it before removing any object, so
    reads answer 404 from then on and a job still running sees it and cleans up after itself.
    The row goes once the objects are gone; a ``deleting`` row left by a failed DELETE is
    finished by the next DELETE or by the reconciler.
    """

    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    DELETING = "deleting"


#: The statuses an API client may see; ``deleting`` uploads answer 404.
VISIBLE_STATUSES = (UploadStatus.QUEUED, UploadStatus.PROCESSING, UploadStatus.DONE, UploadStatus.FAILED)


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and always read back timezone-aware.

    SQLite keeps no offset and hands back naive values; doing the conversion in the column type
    means no caller has to remember it.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON, datetime: UtcDateTime()}


class Upload(Base):
    __tablename__ = "uploads"
    __table_args__ = (
        UniqueConstraint("tenant", "idempotency_key", name="uq_uploads_tenant_idempotency_key"),
        Index("ix_uploads_status_updated", "status", "updated_at"),
        Index("ix_uploads_tenant_created_id", "tenant", "created_at", "id"),  # GET /v1/uploads pages
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    filename: Mapped[str | None] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    declared_type: Mapped[str | None] = mapped_column(String(255))
    detected_type: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    tags: Mapped[list[str] | None] = mapped_column(JSON)
    original_key: Mapped[str] = mapped_column(String(255))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_id: Mapped[str | None] = mapped_column(String(128))
    key_id: Mapped[str | None] = mapped_column(String(32))
    #: The upload token (its ``jti``) that created the upload: its holder reads only these.
    token_id: Mapped[str | None] = mapped_column(String(32), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="upload", cascade="all, delete-orphan", order_by="Artifact.name", lazy="selectin"
    )


@dataclass(slots=True)
class NewUploadValues:
    """A just-accepted upload's row, as a plain record: what the group commit inserts
    (``repository.insert_uploads``) and the ``202`` shows. Same attribute names as ``Upload``
    (``metadata_`` included), so readers of either take both; never added to a session. An
    ``Upload`` object would be transient all the same, and building one through the ORM's
    instrumented attributes cost ~45 us per upload (docs/benchmarks.md). The field list
    mirrors ``Upload``'s columns on purpose: a column added there is added here."""

    id: str
    tenant: str
    filename: str | None
    size: int
    sha256: str
    declared_type: str | None
    detected_type: str
    status: str
    metadata_: dict[str, Any] | None
    tags: list[str] | None
    original_key: str
    idempotency_key: str | None
    request_id: str | None
    key_id: str | None
    token_id: str | None
    created_at: datetime
    updated_at: datetime
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0
    artifacts: list[Artifact] = field(default_factory=list)  # (none yet)


#: What reads an upload's values: a row loaded through the ORM, or a just-accepted one.
UploadValues = Upload | NewUploadValues


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("upload_id", "name", name="uq_artifacts_upload_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))

    upload: Mapped[Upload] = relationship(back_populates="artifacts")


class ApiKey(Base):
    """An API key: only its SHA-256 is stored; ``id`` is the public part of the key."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    label: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class UploadTokenUse(Base):
    """How many uploads an upload token has started (its ``max_uploads`` budget); one row per
    token, created at its first use, useless once ``expires_at`` has passed."""

    __tablename__ = "upload_token_uses"

    token_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    uses: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(index=True)
