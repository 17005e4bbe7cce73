"""Queries. Every function that reads an upload takes the tenant explicitly: no query can
return another tenant's row by accident."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, cast, delete, exists, func, insert, inspect, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from upload_service.db.audit_models import AuditEventRow
from upload_service.db.models import VISIBLE_STATUSES, ApiKey, Artifact, NewUploadValues, Upload, UploadStatus, UploadValues


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- uploads ------------------------------------------------------------------------------


def get_upload(session: Session, tenant: str, upload_id: str, *, include_deleting: bool = False) -> Upload | None:
    """The tenant's upload; one being deleted counts as gone unless ``include_deleting``."""
    statement = select(Upload).where(Upload.id == upload_id, Upload.tenant == tenant)
    if not include_deleting:
        statement = statement.where(Upload.status.in_(list(VISIBLE_STATUSES)))
    return session.scalar(statement)


def get_upload_any_tenant(session: Session, upload_id: str) -> Upload | None:
    """For workers and the reconciler, which act on behalf of the upload's own tenant."""
    return session.get(Upload, upload_id)


def find_by_idempotency_key(session: Session, tenant: str, key: str) -> Upload | None:
    return session.scalar(select(Upload).where(Upload.tenant == tenant, Upload.idempotency_key == key))


def add_upload(session: Session, upload: Upload) -> None:
    session.add(upload)
    session.flush()


def insert_uploads(session: Session, uploads: Sequence[NewUploadValues]) -> None:
    """New rows for ``uploads`` with one Core multi-row insert on the session's connection: the
    accept path's hot statement, without the ORM's unit of work."""
    if uploads:
        session.connection().execute(_INSERT_UPLOADS, [upload_row(upload) for upload in uploads])


_INSERT_UPLOADS = insert(Upload.__table__)


def existing_upload_ids(session: Session, upload_ids: Sequence[str]) -> set[str]:
    """Which of ``upload_ids`` have a row (any tenant, any status): the sweep of originals
    stored by a process that died before their rows committed."""
    if not upload_ids:
        return set()
    return set(session.scalars(select(Upload.id).where(Upload.id.in_(list(upload_ids)))))


def upload_row(upload: UploadValues) -> dict[str, Any]:
    """The column values of ``upload``, keyed by column name."""
    return {column.name: getattr(upload, attribute) for attribute, column in _UPLOAD_COLUMNS}


_UPLOAD_COLUMNS = [(prop.key, prop.columns[0]) for prop in inspect(Upload).column_attrs]


def mark_deleting(session: Session, upload_id: str) -> bool:
    """The first step of a delete: from now on reads answer 404 and jobs stop and clean up."""
    statement = (
        update(Upload)
        .where(Upload.id == upload_id, Upload.status != UploadStatus.DELETING)
        .values(status=UploadStatus.DELETING, updated_at=utcnow())
    )
    return session.execute(statement).rowcount > 0


def upload_status(session: Session, upload_id: str) -> str | None:
    """The upload's current status, None if the row is gone (a worker's re-check)."""
    return session.scalar(select(Upload.status).where(Upload.id == upload_id))


def claimed_tenant(session: Session, upload_id: str) -> str | None:
    """The tenant of an upload whose row is gone, from the ``processing:started`` event a worker
    committed with its claim (so a later run can still find and clean its artifacts prefix)."""
    statement = select(AuditEventRow.tenant).where(
        AuditEventRow.upload_id == upload_id, AuditEventRow.action == "processing:started"
    )
    return session.scalar(statement.limit(1))


def upload_events(upload_id: str, actions: Sequence[str]) -> Select[tuple[int]]:
    """A query for the upload's audit events with one of ``actions`` (e.g. its terminal one)."""
    return select(AuditEventRow.id).where(AuditEventRow.upload_id == upload_id, AuditEventRow.action.in_(list(actions)))


def delete_upload(session: Session, upload: Upload) -> bool:
    """The row and its artifact rows; False if another deleter removed it first."""
    session.execute(delete(Artifact).where(Artifact.upload_id == upload.id))
    return session.execute(delete(Upload).where(Upload.id == upload.id)).rowcount > 0


def set_status(
    session: Session,
    upload_id: str,
    status: str,
    *,
    error_code: str | None = None,
    error_message: str | None = None,
    only_from: Sequence[str] | None = None,
) -> bool:
    """Move an upload to ``status``; with ``only_from``, only from those states. True if moved."""
    statement = (
        update(Upload)
        .where(Upload.id == upload_id)
        .values(status=status, error_code=error_code, error_message=error_message, updated_at=utcnow())
    )
    if only_from is not None:
        statement = statement.where(Upload.status.in_(list(only_from)))
    return session.execute(statement).rowcount > 0


def count_attempt(session: Session, upload_id: str) -> int:
    """Increment and return how many times processing of this upload has started."""
    session.execute(update(Upload).where(Upload.id == upload_id).values(attempts=Upload.attempts + 1))
    return session.scalar(select(Upload.attempts).where(Upload.id == upload_id)) or 0


def replace_artifacts(session: Session, upload_id: str, artifacts: Sequence[Artifact]) -> None:
    """Idempotent: running a job twice leaves one row per artifact name."""
    session.execute(delete(Artifact).where(Artifact.upload_id == upload_id))
    session.add_all(artifacts)


def list_uploads(
    session: Session,
    tenant: str,
    *,
    limit: int,
    token_id: str | None = None,
    status: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    tag: str | None = None,
    after: tuple[datetime, str] | None = None,
) -> list[Upload]:
    """The tenant's visible uploads, newest first by ``(created_at, id)``, at most ``limit``;
    with ``after``, only those strictly after that position (keyset paging); with ``token_id``,
    only the ones that upload token created. ``created_after``/``created_before`` are exclusive;
    ``tag``: uploads whose tags contain it."""
    statement = select(Upload).where(Upload.tenant == tenant)
    if status is None:
        statement = statement.where(Upload.status.in_(list(VISIBLE_STATUSES)))
    else:
        statement = statement.where(Upload.status == status)
    if token_id is not None:
        statement = statement.where(Upload.token_id == token_id)
    if created_after is not None:
        statement = statement.where(Upload.created_at > created_after)
    if created_before is not None:
        statement = statement.where(Upload.created_at < created_before)
    if tag is not None:
        statement = statement.where(_has_tag(session, tag))
    if after is not None:
        created_at, upload_id = after
        # The plain bound lets both engines start the index scan at the cursor (the OR alone
        # is a filter on PostgreSQL: every newer row would be read again, page after page).
        statement = statement.where(
            Upload.created_at <= created_at,
            or_(Upload.created_at < created_at, and_(Upload.created_at == created_at, Upload.id < upload_id)),
        )
    statement = statement.order_by(Upload.created_at.desc(), Upload.id.desc()).limit(limit)
    return list(session.scalars(statement))


def _has_tag(session: Session, tag: str) -> ColumnElement[bool]:
    """``tags`` (a JSON array of strings) contains ``tag``: JSONB containment on PostgreSQL,
    ``json_each`` on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(Upload.tags, JSONB).contains([tag])
    elements = func.json_each(Upload.tags).table_valued("value")
    return exists(select(1).select_from(elements).where(elements.c.value == tag))


def uploads_in_status(session: Session, status: str, *, older_than: datetime, limit: int = 500) -> list[Upload]:
    statement = (
        select(Upload)
        .where(Upload.status == status, Upload.updated_at < older_than)
        .order_by(Upload.updated_at)
        .limit(limit)
    )
    return list(session.scalars(statement))


# --- API keys -----------------------------------------------------------------------------


def add_api_key(session: Session, key: ApiKey) -> None:
    session.add(key)


def get_api_key(session: Session, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def list_api_keys(session: Session, tenant: str | None = None) -> list[ApiKey]:
    statement = select(ApiKey).order_by(ApiKey.created_at)
    if tenant is not None:
        statement = statement.where(ApiKey.tenant == tenant)
    return list(session.scalars(statement))
