"""Reading the trail: tenant-scoped pages for the API, an all-tenant stream for export.

Pages are keyed on the autoincrement ``id`` (never an offset), so rows written while a client
pages through do not shift or repeat what it sees.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from datetime import datetime, timezone

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from upload_service.audit.chain import NO_TENANT_CHAIN
from upload_service.audit.events import AuditAction, AuditEvent, StoredEvent
from upload_service.db.audit_models import AuditEventRow
from upload_service.errors import ErrorCode, ServiceError

MAX_PAGE = 1000
_CURSOR_PREFIX = "a1:"


def list_events(
    session: Session,
    *,
    tenant: str,
    upload_id: str | None = None,
    request_id: str | None = None,
    action: AuditAction | str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> tuple[list[StoredEvent], str | None]:
    """One page of ``tenant``'s events, oldest first, and the cursor of the next page (or None).

    ``since`` is inclusive, ``until`` exclusive. A bad cursor, action or limit is the caller's
    mistake: ``ServiceError(BAD_REQUEST)``.
    """
    if not tenant or tenant == NO_TENANT_CHAIN:
        raise ValueError("list_events is always scoped to one tenant")
    if not 1 <= limit <= MAX_PAGE:
        raise ServiceError(ErrorCode.BAD_REQUEST, f"limit must be between 1 and {MAX_PAGE}")
    statement = _filtered(tenant=tenant, since=since, until=until)
    if upload_id is not None:
        statement = statement.where(AuditEventRow.upload_id == upload_id)
    if request_id is not None:
        statement = statement.where(AuditEventRow.request_id == request_id)
    if action is not None:
        try:
            statement = statement.where(AuditEventRow.action == AuditAction(action).value)
        except ValueError:
            raise ServiceError(ErrorCode.BAD_REQUEST, "unknown audit action") from None
    if outcome is not None:
        statement = statement.where(AuditEventRow.outcome == outcome)
    if cursor is not None:
        statement = statement.where(AuditEventRow.id > decode_cursor(cursor))
    rows = list(session.scalars(statement.order_by(AuditEventRow.id).limit(limit + 1)))
    more = len(rows) > limit
    page = [to_stored(row) for row in rows[:limit]]
    return page, (encode_cursor(page[-1].id) if more else None)


def iter_events(
    session: Session,
    *,
    tenant: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    batch: int = 1000,
) -> Iterator[StoredEvent]:
    """Every matching event in ``id`` order (export): all tenants when ``tenant`` is None, the
    events without a tenant when it is ``-`` (the name of their chain)."""
    last_id = 0
    while True:
        statement = _filtered(tenant=tenant, since=since, until=until).where(AuditEventRow.id > last_id)
        rows = list(session.scalars(statement.order_by(AuditEventRow.id).limit(batch)))
        yield from (to_stored(row) for row in rows)
        if len(rows) < batch:
            return
        last_id = rows[-1].id


def count_events(session: Session, *, chain: str | None = None) -> int:
    """How many events are stored, in one chain or all."""
    statement = select(func.count()).select_from(AuditEventRow)
    if chain is not None:
        statement = statement.where(AuditEventRow.chain == chain)
    return session.scalar(statement) or 0


def to_stored(row: AuditEventRow) -> StoredEvent:
    event = AuditEvent(
        event_id=row.event_id,
        action=AuditAction(row.action),
        occurred_at=row.occurred_at,
        tenant=row.tenant,
        key_id=row.key_id,
        client_addr=row.client_addr,
        request_id=row.request_id,
        upload_id=row.upload_id,
        sha256=row.sha256,
        declared_type=row.declared_type,
        detected_type=row.detected_type,
        size=row.size,
        outcome=row.outcome,
        error_code=row.error_code,
        details=row.details,
    )
    return StoredEvent(id=row.id, event=event, seq=row.seq, prev_hash=row.prev_hash, hash=row.hash)


def encode_cursor(row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError(text)
        row_id = int(text.removeprefix(_CURSOR_PREFIX))
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise ServiceError(ErrorCode.BAD_REQUEST, "invalid cursor") from None
    if row_id < 0:
        raise ServiceError(ErrorCode.BAD_REQUEST, "invalid cursor")
    return row_id


def _filtered(*, tenant: str | None, since: datetime | None, until: datetime | None) -> Select[AuditEventRow]:
    statement = select(AuditEventRow)
    if tenant == NO_TENANT_CHAIN:
        statement = statement.where(AuditEventRow.tenant.is_(None))
    elif tenant is not None:
        statement = statement.where(AuditEventRow.tenant == tenant)
    if since is not None:
        statement = statement.where(AuditEventRow.occurred_at >= _utc(since))
    if until is not None:
        statement = statement.where(AuditEventRow.occurred_at < _utc(until))
    return statement


def _utc(value: datetime) -> datetime:
    """Bounds in UTC: SQLite compares the stored text, which is written in UTC."""
    if value.tzinfo is None:
        raise ServiceError(ErrorCode.BAD_REQUEST, "time bounds need a timezone")
    return value.astimezone(timezone.utc)

