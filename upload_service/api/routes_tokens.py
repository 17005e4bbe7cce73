"""``POST /v1/upload-tokens``: a backend holding an API key mints a short-lived, narrowed upload
token for one page view or app session; the page uploads with it and never sees the key."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from upload_service.api.auditing import flush_task, note
from upload_service.api.deps import KeyringDep, PrincipalDep, ServicesDep
from upload_service.api.jsonbody import BoundedJsonRoute
from upload_service.audit import AuditAction
from upload_service.auth import Scope
from upload_service.tokens import mint, new_claims

router = APIRouter(prefix="/v1/upload-tokens", tags=["upload tokens"], route_class=BoundedJsonRoute)


class TokenRequest(BaseModel):
    """What the token may do; every field optional (defaults: 10 minutes, one upload of any
    allowed type up to its limit)."""

    model_config = ConfigDict(extra="forbid")

    ttl_seconds: int | None = Field(default=None, description="default tokens.default_ttl_seconds, at most max_ttl_seconds")
    allowed_types: list[str] | None = Field(default=None, description="a subset of the service's allowed types")
    max_bytes: int | None = Field(default=None, description="the largest file, at most the body cap")
    max_uploads: int = 1
    metadata: dict[str, Any] | None = Field(default=None, description="set on every upload, over the client's")
    tags: list[str] | None = None


class TokenOut(BaseModel):
    token: str
    token_id: str
    expires_at: datetime
    max_uploads: int
    allowed_types: list[str]
    max_bytes: int | None
    metadata: dict[str, Any] | None
    tags: list[str] | None


@router.post("", status_code=201, response_model=TokenOut)
def create_upload_token(
    request: Request,
    services: ServicesDep,
    principal: PrincipalDep,
    keyring: KeyringDep,
    body: Annotated[TokenRequest | None, Body()] = None,
) -> JSONResponse:
    principal.require(Scope.UPLOAD)  # an upload token can't mint tokens: require() refuses it
    wanted = body or TokenRequest()
    settings = services.settings
    claims = new_claims(
        tenant=principal.tenant,
        issuer_key_id=principal.key_id,
        now=time.time(),
        settings=settings.tokens,
        limits=settings.limits,
        ttl_seconds=wanted.ttl_seconds,
        types=wanted.allowed_types,
        max_bytes=wanted.max_bytes,
        max_uploads=wanted.max_uploads,
        metadata=wanted.metadata,
        tags=wanted.tags,
    )
    token = mint(keyring, claims)
    expires_at = datetime.fromtimestamp(claims.expires_at, timezone.utc)
    note(
        request, AuditAction.TOKEN_ISSUED, "success",
        details={
            "token_id": claims.jti, "key": keyring.active_key_id, "expires_at": expires_at.isoformat(),
            "max_uploads": claims.max_uploads, "allowed_types": list(claims.types) if claims.types else None,
            "max_bytes": claims.max_bytes,
        },
    )
    out = TokenOut(
        token=token,
        token_id=claims.jti,
        expires_at=expires_at,
        max_uploads=claims.max_uploads,
        allowed_types=list(claims.types) if claims.types is not None else list(settings.limits.allowed_types),
        max_bytes=claims.max_bytes,
        metadata=claims.metadata,
        tags=list(claims.tags) if claims.tags is not None else None,
    )
    return JSONResponse(
        out.model_dump(mode="json"), status_code=201, headers={"Cache-Control": "no-store"}, background=flush_task(request)
    )
