"""What a processing run records besides its status: the audit event and the webhook event
built from the upload, each committed in the transaction of the status change it reports."""

from __future__ import annotations

from sqlalchemy.orm import Session

from upload_service.audit import AuditAction, AuditEvent
from upload_service.db import repository
from upload_service.db.models import Artifact, Upload, UploadStatus
from upload_service.logs import current_request_id
from upload_service.webhooks.events import EventType
from upload_service.webhooks.outbox import record_upload_event


def audit_event(
    upload: Upload, action: AuditAction, outcome: str, *, error_code: str | None = None, details: dict[str, bool] | None = None
) -> AuditEvent:
    return AuditEvent(
        action=action,
        outcome=outcome,
        tenant=upload.tenant,
        request_id=current_request_id.get(),
        upload_id=upload.id,
        sha256=upload.sha256,
        declared_type=upload.declared_type,
        detected_type=upload.detected_type,
        size=upload.size,
        error_code=error_code,
        details=details,
    )


def webhook_event(
    session: Session,
    upload: Upload,
    event_type: EventType,
    *,
    artifacts: list[Artifact] | None = None,
    error: tuple[str, str] | None = None,
) -> None:
    """The upload's webhook event, in the transaction of the status change it reports."""
    status = UploadStatus.DONE if event_type is EventType.UPLOAD_DONE else UploadStatus.FAILED
    record_upload_event(
        session, upload, event_type, occurred_at=repository.utcnow(), status=status.value,
        error=error, artifacts=artifacts if artifacts is not None else [],
    )
