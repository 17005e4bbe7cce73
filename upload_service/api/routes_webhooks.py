"""``/v1/webhooks``: the caller's tenant's webhook endpoints and deliveries (admin scope).

Another tenant's endpoint or event answers 404, as uploads do. A new endpoint's signing secret,
and a rotated one, are in the answer once and never again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from upload_service.api.auditing import flush_task, note
from upload_service.api.deps import PrincipalDep, ServicesDep, SessionDep
from upload_service.api.jsonbody import BoundedJsonRoute
from upload_service.audit import AuditAction
from upload_service.auth import Scope
from upload_service.db import webhooks_repo
from upload_service.webhooks import admin

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], route_class=BoundedJsonRoute)


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048)
    events: list[str] | None = Field(default=None, max_length=8)


@router.post("", status_code=201)
def add_webhook_endpoint(
    request: Request, body: EndpointIn, principal: PrincipalDep, services: ServicesDep, session: SessionDep
) -> JSONResponse:
    """Subscribe ``url`` to ``events`` (default: all); the answer carries ``secret`` once."""
    principal.require(Scope.ADMIN)
    settings = services.settings.webhooks
    box = admin.secret_box_or_error(settings)
    new = admin.add_endpoint(session, settings, box, principal.tenant, body.url, body.events)
    note(request, AuditAction.WEBHOOK_ENDPOINT_ADDED, "success",
         details={"endpoint_id": new.endpoint.id, "url": new.endpoint.url, "events": new.endpoint.events})
    return JSONResponse(
        {**admin.endpoint_view(new.endpoint), "secret": new.secret},
        status_code=201,
        headers={"Location": f"/v1/webhooks/{new.endpoint.id}"},
        background=flush_task(request),
    )


@router.get("")
def list_webhook_endpoints(principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    principal.require(Scope.ADMIN)
    return {"endpoints": [admin.endpoint_view(e) for e in webhooks_repo.list_endpoints(session, principal.tenant)]}


@router.get("/{endpoint_id}")
def read_webhook_endpoint(endpoint_id: str, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    principal.require(Scope.ADMIN)
    return admin.endpoint_view(admin.find_endpoint(session, principal.tenant, endpoint_id))


@router.delete("/{endpoint_id}", status_code=204)
def remove_webhook_endpoint(request: Request, endpoint_id: str, principal: PrincipalDep, session: SessionDep) -> Response:
    principal.require(Scope.ADMIN)
    endpoint = admin.remove_endpoint(session, principal.tenant, endpoint_id)
    note(request, AuditAction.WEBHOOK_ENDPOINT_REMOVED, "success", details={"endpoint_id": endpoint.id})
    return Response(status_code=204, background=flush_task(request))


@router.post("/{endpoint_id}/rotate-secret")
def rotate_webhook_secret(
    request: Request, endpoint_id: str, principal: PrincipalDep, services: ServicesDep, session: SessionDep
) -> JSONResponse:
    """A new secret (in this answer only); the old one also signs until ``previous_secret_expires_at``."""
    principal.require(Scope.ADMIN)
    settings = services.settings.webhooks
    box = admin.secret_box_or_error(settings)
    new = admin.rotate_secret(session, settings, box, principal.tenant, endpoint_id)
    note(request, AuditAction.WEBHOOK_SECRET_ROTATED, "success", details={"endpoint_id": endpoint_id})
    return JSONResponse({**admin.endpoint_view(new.endpoint), "secret": new.secret}, background=flush_task(request))


@router.get("/{endpoint_id}/deliveries")
def list_webhook_deliveries(
    endpoint_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|dead)$")] = None,
    event_id: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[int | None, Query(ge=1, description="the last page's smallest id")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Deliveries to the endpoint, newest first, each with its attempts (status, latency, error)."""
    principal.require(Scope.ADMIN)
    admin.find_endpoint(session, principal.tenant, endpoint_id)
    rows = webhooks_repo.list_deliveries(
        session, principal.tenant, endpoint_id=endpoint_id, event_id=event_id, status=status,
        before_id=before, limit=limit,
    )
    views = admin.delivery_views(session, rows)
    return {"deliveries": views, "next_before": views[-1]["id"] if len(views) == limit else None}


@router.post("/events/{event_id}/redeliver", status_code=202)
def redeliver_webhook_event(request: Request, event_id: str, principal: PrincipalDep, session: SessionDep) -> JSONResponse:
    """Send the event again to the endpoints it went to (its dead or delivered deliveries)."""
    principal.require(Scope.ADMIN)
    count = admin.redeliver(session, principal.tenant, event_id)
    note(request, AuditAction.WEBHOOK_REDELIVERED, "success", details={"event_id": event_id, "deliveries": count})
    return JSONResponse({"event_id": event_id, "pending": count}, status_code=202, background=flush_task(request))
