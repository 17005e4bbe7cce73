"""The transactional outbox: status changes record their webhook event here, in THEIR session.

``record_upload_event`` adds the event and one pending delivery per subscribed endpoint to the
caller's transaction, so the event commits exactly when the change it reports commits (and a
change that rolls back leaves no event). ``record_upload_events`` does the same for a group
commit's batch of accepted uploads. A tenant without subscribed endpoints costs one small
indexed query and writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from upload_service.db import webhooks_repo
from upload_service.db.models import Artifact, Upload, UploadValues
from upload_service.db.webhook_models import WebhookEvent
from upload_service.webhooks.events import EventType, build_body, format_time, new_event_id


def upload_record(
    upload: UploadValues,
    *,
    status: str | None = None,
    error: tuple[str, str] | None = None,
    artifacts: Sequence[Artifact] | None = None,
    updated_at: datetime | None = None,
) -> dict[str, Any]:
    """The upload record as ``GET /v1/uploads/{id}`` shows it, with the change applied."""
    if error is None and status is None and upload.error_code:  # a new status brings its own error
        error = (upload.error_code, upload.error_message or "")
    listed = list(artifacts) if artifacts is not None else list(upload.artifacts or [])
    return {
        "id": upload.id,
        "filename": upload.filename,
        "size": upload.size,
        "sha256": upload.sha256,
        "declared_type": upload.declared_type,
        "detected_type": upload.detected_type,
        "status": status or upload.status,
        "error": {"code": error[0], "message": error[1]} if error else None,
        "metadata": upload.metadata_,
        "tags": upload.tags,
        "artifacts": [
            {"name": a.name, "key": a.key, "size": a.size, "type": a.content_type, "sha256": a.sha256}
            for a in sorted(listed, key=lambda a: a.name)
        ],
        "created_at": format_time(upload.created_at),
        "updated_at": format_time(updated_at or upload.updated_at),
    }


def record_upload_event(
    session: Session,
    upload: Upload,
    event_type: EventType,
    *,
    occurred_at: datetime,
    status: str | None = None,
    error: tuple[str, str] | None = None,
    artifacts: Sequence[Artifact] | None = None,
) -> str | None:
    """Add ``event_type`` about ``upload`` to ``session``'s transaction; its id, or None when no
    endpoint of the tenant subscribes to it."""
    endpoint_ids = webhooks_repo.subscribed_endpoint_ids(session, upload.tenant, event_type.value)
    if not endpoint_ids:
        return None
    data = upload_record(upload, status=status, error=error, artifacts=artifacts, updated_at=occurred_at)
    event = WebhookEvent(
        id=new_event_id(),
        tenant=upload.tenant,
        type=event_type.value,
        upload_id=upload.id,
        body=build_body(event_type.value, occurred_at, data),
        created_at=occurred_at,
    )
    webhooks_repo.add_event(session, event, endpoint_ids)
    return event.id


def record_upload_events(session: Session, uploads: Sequence[UploadValues], event_type: EventType) -> None:
    """``record_upload_event`` for a group commit's new uploads (each at its ``created_at``):
    one query for the batch's tenants' subscriptions, one multi-row insert per table."""
    if not uploads:
        return
    subscribed = webhooks_repo.subscribed_endpoints_by_tenant(session, [u.tenant for u in uploads], event_type.value)
    if not subscribed:
        return
    events: list[tuple[WebhookEvent, list[str]]] = []
    for upload in uploads:
        endpoint_ids = subscribed.get(upload.tenant)
        if not endpoint_ids:
            continue
        data = upload_record(upload, updated_at=upload.created_at)
        event = WebhookEvent(
            id=new_event_id(),
            tenant=upload.tenant,
            type=event_type.value,
            upload_id=upload.id,
            body=build_body(event_type.value, upload.created_at, data),
            created_at=upload.created_at,
        )
        events.append((event, endpoint_ids))
    webhooks_repo.add_events(session, events)
