"""``/v1/uploads``: accept, read, change, delete, and artifact URLs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.requests import ClientDisconnect

from upload_service.api.deps import PrincipalDep, RequestIdDep, ServicesDep, SessionDep
from upload_service.api.schemas import UploadOut, UploadPatch
from upload_service.errors import ErrorCode, ServiceError
from upload_service.ingest.body import BodyHeaders
from upload_service.service import UploadRequest

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


@router.post(
    "",
    status_code=202,
    response_model=UploadOut,
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}, "metadata": {"type": "string"}}}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            }
        }
    },
)
async def create_upload(
    request: Request,
    services: ServicesDep,
    principal: PrincipalDep,
    request_id: RequestIdDep,
    filename: Annotated[str | None, Query(max_length=1024)] = None,
) -> JSONResponse:
    """Stream the body (never ``request.form()``: it spools without a cap) into the ingest loop."""
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
    )
    try:
        accepted = await services.uploads.accept_upload(upload_request, request.stream())
    except ClientDisconnect:
        raise ServiceError(ErrorCode.BAD_REQUEST, "the client disconnected before the body was complete") from None
    except ServiceError as exc:
        # The rest of a refused body may still be on its way: close the connection rather than
        # let the server drain it to keep the connection alive.
        exc.headers.setdefault("Connection", "close")
        raise
    upload = accepted.upload
    return JSONResponse(
        UploadOut.of(upload).model_dump(mode="json"),
        status_code=202,
        headers={
            "Location": f"/v1/uploads/{upload.id}",
            **({"Idempotent-Replayed": "true"} if accepted.replayed else {}),
        },
    )


@router.get("/{upload_id}", response_model=UploadOut)
def read_upload(upload_id: str, services: ServicesDep, principal: PrincipalDep, session: SessionDep) -> UploadOut:
    return UploadOut.of(services.uploads.get_upload(session, principal, upload_id))


@router.patch("/{upload_id}", response_model=UploadOut)
def patch_upload(
    upload_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    session: SessionDep,
    patch: Annotated[UploadPatch | None, Body()] = None,
) -> UploadOut:
    changes = patch.model_dump(exclude_unset=True) if patch is not None else {}
    return UploadOut.of(services.uploads.patch_upload(session, principal, upload_id, changes))


@router.delete("/{upload_id}", status_code=204)
def delete_upload(upload_id: str, services: ServicesDep, principal: PrincipalDep, session: SessionDep) -> Response:
    services.uploads.delete_upload(session, principal, upload_id)
    return Response(status_code=204)


@router.get("/{upload_id}/artifacts/{name}", status_code=307)
def artifact_redirect(
    upload_id: str, name: str, services: ServicesDep, principal: PrincipalDep, session: SessionDep
) -> RedirectResponse:
    url = services.uploads.artifact_url(session, principal, upload_id, name)
    return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
