"""``/v1/uploads``: accept, read, change, delete, and artifact URLs.

Each route notes its audit event (handed to the group commit writer after the response); the
upload route counts its metrics, and the upload service audits its own decision.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from upload_service.api.auditing import flush_task, note
from upload_service.api.artifact_links import LINK_RESPONSE, artifact_link_response, link_expiry, wants_json
from upload_service.api.jsonbody import BoundedJsonRoute
from upload_service.api.deps import CatalogDep, PrincipalDep, SessionDep, UploadCallDep
from upload_service.api.schemas import UploadList, UploadOut, UploadPatch
from upload_service.audit import AuditAction
from upload_service.errors import ErrorCode, ServiceError
from upload_service.ingest.body import BodyHeaders, CountedBody
from upload_service.listing import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from upload_service.metrics import ApiMetrics, type_label
from upload_service.service import UploadRequest

log = logging.getLogger(__name__)

#: BoundedJsonRoute: JSON bodies (PATCH) are depth-checked before FastAPI decodes them.
router = APIRouter(prefix="/v1/uploads", tags=["uploads"], route_class=BoundedJsonRoute)

_UPLOAD_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}, "metadata": {"type": "string"}},
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        }
    }
}


@router.post(
    "",
    status_code=202,
    response_model=UploadOut,
    openapi_extra=_UPLOAD_BODY,
)
async def create_upload(
    request: Request,
    call: UploadCallDep,
    filename: Annotated[str | None, Query(max_length=1024)] = None,
) -> JSONResponse:
    """Stream the body (never ``request.form()``: it spools without a cap) into the ingest loop.
    The service audits its decision (accepted with the row, or rejected); the route counts it.
    An unexpected error in its dependency is an ``upload:rejected`` too."""
    uploads, metrics, principal, request_id = call.uploads, call.metrics, call.principal, call.request_id
    headers = BodyHeaders(
        content_type=request.headers.get("content-type"),
        content_length=request.headers.get("content-length"),
        filename=filename,
    )
    upload_request = UploadRequest(
        principal=principal,
        headers=headers,
        request_id=request_id,
        idempotency_key=request.headers.get("idempotency-key"),
        client_addr=request.client.host if request.client else None,
    )
    # A client gone mid-body is a 400 refusal, audited by the service like any other.
    body = CountedBody(request.stream(), disconnects=(ClientDisconnect,))
    allowed_types = uploads.settings.limits.allowed_types
    started = time.perf_counter()
    metrics.in_flight.inc()
    try:
        accepted = await uploads.accept_upload(upload_request, body)
    except Exception as exc:  # noqa: BLE001 - every failure is answered as a rejection
        error = _refusal(exc)
        # The rest of a refused body may still be on its way: it is drained within bounds
        # (api/lingering.py) and never parsed as a next request, so the connection closes.
        error.headers.setdefault("Connection", "close")
        _count(metrics, allowed_types, "rejected", error.code.value, _detected(error), started, body.count)
        raise error from None
    finally:
        metrics.in_flight.dec()
    upload = accepted.upload
    _count(metrics, allowed_types, "accepted", "", upload.detected_type, started, body.count)
    if body.last_read_at is not None:
        metrics.finish_seconds.observe(time.perf_counter() - body.last_read_at)
    return JSONResponse(
        UploadOut.of(upload).model_dump(mode="json"),
        status_code=202,
        headers={
            "Location": f"/v1/uploads/{upload.id}",
            **({"Idempotent-Replayed": "true"} if accepted.replayed else {}),
        },
        background=flush_task(request),  # events others noted on this request, if any
    )


def _refusal(exc: Exception) -> ServiceError:
    """The error an upload is refused with: its own, or ``INTERNAL`` for an unexpected one
    (logged here with its traceback; the client sees none of it)."""
    if isinstance(exc, ServiceError):
        return exc
    log.error("unexpected error while accepting an upload", exc_info=exc)
    return ServiceError(ErrorCode.INTERNAL, "internal error", internal=f"unexpected {type(exc).__name__}")


def _detected(error: ServiceError) -> str:
    details = error.details if isinstance(error.details, dict) else {}
    return str(details.get("detected_type") or "")


def _count(
    metrics: ApiMetrics, allowed_types: Any, outcome: str, code: str, media_type: str, started: float, received: int
) -> None:
    metrics.uploads.labels(outcome=outcome, code=code, type=type_label(media_type, allowed_types)).inc()
    metrics.received_bytes.inc(received)
    metrics.ingest_seconds.labels(outcome=outcome).observe(time.perf_counter() - started)


@router.get("", response_model=UploadList)
def list_uploads(
    uploads: CatalogDep,
    principal: PrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size.")] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
    status: Annotated[Literal["queued", "processing", "done", "failed"] | None, Query()] = None,
    created_after: Annotated[str | None, Query(max_length=64, description="RFC 3339; exclusive.")] = None,
    created_before: Annotated[str | None, Query(max_length=64, description="RFC 3339; exclusive.")] = None,
    tag: Annotated[str | None, Query(max_length=256, description="Uploads whose tags contain this one.")] = None,
) -> UploadList:
    """The caller's uploads, newest first, in cursor pages (an upload token lists its own)."""
    page = uploads.list_uploads(
        session, principal, limit=limit, cursor=cursor, status=status,
        created_after=created_after, created_before=created_before, tag=tag,
    )
    return UploadList(items=[UploadOut.of(u) for u in page.items], next_cursor=page.next_cursor)


@router.get("/{upload_id}", response_model=UploadOut)
def read_upload(upload_id: str, uploads: CatalogDep, principal: PrincipalDep, session: SessionDep) -> UploadOut:
    return UploadOut.of(uploads.get_upload(session, principal, upload_id))


@router.patch("/{upload_id}", response_model=UploadOut)
def patch_upload(
    request: Request,
    upload_id: str,
    uploads: CatalogDep,
    principal: PrincipalDep,
    session: SessionDep,
    patch: Annotated[UploadPatch | None, Body()] = None,
) -> JSONResponse:
    changes: dict[str, Any] = patch.model_dump(exclude_unset=True) if patch is not None else {}
    upload = uploads.patch_upload(session, principal, upload_id, changes)
    note(
        request, AuditAction.UPLOAD_METADATA_CHANGED, "success",
        upload_id=upload.id, sha256=upload.sha256, details={"fields": sorted(changes)},
    )
    return JSONResponse(UploadOut.of(upload).model_dump(mode="json"), background=flush_task(request))


@router.delete("/{upload_id}", status_code=204)
def delete_upload(
    request: Request, upload_id: str, uploads: CatalogDep, principal: PrincipalDep, session: SessionDep
) -> Response:
    uploads.delete_upload(session, principal, upload_id)
    note(request, AuditAction.UPLOAD_DELETED, "success", upload_id=upload_id)
    return Response(status_code=204, background=flush_task(request))


@router.get("/{upload_id}/artifacts/{name}", status_code=307, responses=LINK_RESPONSE)
def artifact_redirect(
    request: Request, upload_id: str, name: str, uploads: CatalogDep, principal: PrincipalDep, session: SessionDep,
    redirect: Annotated[bool, Query(description="false: answer {url, expires_at} instead of a 307")] = True,
) -> Response:
    expires_at = link_expiry(uploads.settings.storage.presign_ttl_seconds)
    url = uploads.artifact_url(session, principal, upload_id, name)
    note(request, AuditAction.ARTIFACT_URL_ISSUED, "success", upload_id=upload_id, details={"artifact": name})
    as_json = wants_json(redirect, request.headers.get("accept"))
    return artifact_link_response(url, expires_at, as_json=as_json, background=flush_task(request))
