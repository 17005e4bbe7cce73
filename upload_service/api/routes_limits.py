"""``GET /v1/limits``: what the ingest will accept from this caller, before a byte is sent.

The values come from the same ``LimitSettings`` object the ingest enforces (narrowed by the
caller's upload token, if any: ``tokens.narrow_limits``), shaped so a page can fill Uppy's
``restrictions`` (``uppy.allowedFileTypes``, ``uppy.maxFileSize``) and a file input's ``accept``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from upload_service.api.deps import PrincipalDep, ServicesDep
from upload_service.ingest.formfields import MAX_FORM_VALUE_BYTES
from upload_service.ingest.multipart import FILE_FIELD
from upload_service.ingest.sniff import EXTENSIONS
from upload_service.tokens import narrow_limits

router = APIRouter(prefix="/v1/limits", tags=["limits"])


class TypeLimit(BaseModel):
    type: str
    max_bytes: int
    extensions: list[str]


class UppyRestrictions(BaseModel):
    allowedFileTypes: list[str]  # noqa: N815 - Uppy's own option names
    maxFileSize: int  # noqa: N815
    maxNumberOfFiles: int | None  # noqa: N815


class LimitsOut(BaseModel):
    allowed_types: list[str]
    types: list[TypeLimit]
    max_file_bytes: int
    max_body_bytes: int
    max_filename_chars: int
    file_field: str
    max_form_parts: int
    max_form_value_bytes: int
    accept: str
    max_uploads: int | None
    expires_at: datetime | None
    uppy: UppyRestrictions


@router.get("", response_model=LimitsOut)
async def read_limits(services: ServicesDep, principal: PrincipalDep) -> JSONResponse:
    """Any authenticated caller (API key or upload token) may read its own limits.

    ``async``: it only computes, so it runs on the event loop (a worker thread hop costs more)."""
    limits = narrow_limits(services.settings.limits, principal.token)
    types = [
        TypeLimit(
            type=media_type,
            max_bytes=min(limits.limit_for(media_type), limits.max_body_bytes),
            extensions=sorted(f".{e}" for e in EXTENSIONS.get(media_type, ())),
        )
        for media_type in limits.allowed_types
    ]
    max_file = max((t.max_bytes for t in types), default=0)
    accept = [*limits.allowed_types, *(e for t in types for e in t.extensions)]
    token = principal.token
    out = LimitsOut(
        allowed_types=list(limits.allowed_types),
        types=types,
        max_file_bytes=max_file,
        max_body_bytes=limits.max_body_bytes,
        max_filename_chars=limits.max_filename_chars,
        file_field=FILE_FIELD,
        max_form_parts=limits.max_multipart_parts,
        max_form_value_bytes=MAX_FORM_VALUE_BYTES,
        accept=",".join(accept),
        max_uploads=token.max_uploads if token is not None else None,
        expires_at=datetime.fromtimestamp(token.expires_at, timezone.utc) if token is not None else None,
        uppy=UppyRestrictions(
            allowedFileTypes=accept,
            maxFileSize=max_file,
            maxNumberOfFiles=token.max_uploads if token is not None else None,
        ),
    )
    return JSONResponse(out.model_dump(mode="json"), headers={"Cache-Control": "no-store"})
