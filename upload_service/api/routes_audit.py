"""``GET /v1/audit``: the caller's tenant's audit trail (admin scope), with cursor pagination."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from upload_service.api.deps import PrincipalDep, SessionDep
from upload_service.audit import list_events
from upload_service.auth import Scope
from upload_service.errors import ErrorCode, ServiceError

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("")
def read_audit(
    principal: PrincipalDep,
    session: SessionDep,
    upload_id: str | None = None,
    request_id: str | None = None,
    tenant: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Events oldest first. ``tenant`` may only name the caller's own tenant: a key never sees
    another tenant's trail (operators export every tenant with ``upload-service audit export``)."""
    principal.require(Scope.ADMIN)
    if tenant is not None and tenant != principal.tenant:
        raise ServiceError(ErrorCode.NOT_FOUND, "no such tenant")
    events, next_cursor = list_events(
        session,
        tenant=principal.tenant,
        upload_id=upload_id,
        request_id=request_id,
        action=action,
        outcome=outcome,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    return {"events": [e.to_dict() for e in events], "next_cursor": next_cursor}
