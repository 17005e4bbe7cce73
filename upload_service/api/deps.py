"""Dependencies as ``Annotated`` aliases: narrow ones for routes (the upload catalog, a DB
session, the caller; the upload route's all in one, ``UploadCallDep``), and the container
behind them for the few that need it.

Request-only dependencies are ``async`` where they don't block: no thread hand-off per request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from upload_service.api.auditing import note_auth_failure
from upload_service.api.errors import audit_unexpected_errors_as
from upload_service.api.requestid import request_id_of
from upload_service.audit import AuditAction
from upload_service.auth import Principal, authenticate_token, is_token_credential
from upload_service.catalog import UploadCatalog
from upload_service.container import Services
from upload_service.db.engine import session_scope
from upload_service.errors import ServiceError
from upload_service.metrics import ApiMetrics
from upload_service.service import UploadService
from upload_service.tokens import Keyring
from upload_service.unavailable import database_errors


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_catalog(services: ServicesDep) -> UploadCatalog:
    return services.catalog


CatalogDep = Annotated[UploadCatalog, Depends(get_catalog)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    """A session per request: committed when the endpoint returns (before the response is
    sent), rolled back on any error, always closed; a database failure is the 503 contract."""
    with database_errors(), session_scope(services.sessions) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def get_principal(request: Request, services: ServicesDep) -> Principal:
    """The caller, from ``Authorization: Bearer``; a refusal is an ``auth:failed`` event.

    An upload token (``ust_``) is verified against the keyring with no DB read; an API key
    checked in the last few seconds is known to this process (``auth.KeyAuthenticator``), any
    other finds its row (in a thread: the only hand-off, and only on a miss)."""
    authorization = request.headers.get("authorization")
    try:
        if is_token_credential(authorization):
            principal = authenticate_token(_keyring(request), authorization, now=time.time())
        else:
            known = services.keys.cached(authorization)
            if known is None:
                with database_errors():
                    known = await to_thread.run_sync(services.keys.authenticate, authorization)
            principal = known
    except ServiceError as exc:
        note_auth_failure(request, exc.code.value)
        raise
    request.scope.setdefault("state", {})["principal"] = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_keyring(request: Request) -> Keyring:
    """The upload-token secrets, loaded once in the app's lifespan."""
    return _keyring(request)


def _keyring(request: Request) -> Keyring:
    keyring: Keyring = request.app.state.token_keyring
    return keyring


KeyringDep = Annotated[Keyring, Depends(get_keyring)]


@dataclass(frozen=True)
class UploadCall:
    """What the upload route needs, resolved as one dependency (the hot route: each
    dependency FastAPI solves costs it per request)."""

    uploads: UploadService
    metrics: ApiMetrics
    principal: Principal
    request_id: str


async def get_upload_call(request: Request) -> UploadCall:
    """The upload route's dependencies. An unexpected error from here on (the caller's
    authentication included) is an audited ``upload:rejected``."""
    audit_unexpected_errors_as(request, AuditAction.UPLOAD_REJECTED)
    services = await get_services(request)
    principal = await get_principal(request, services)
    return UploadCall(services.uploads, services.metrics, principal, request_id_of(request.scope))


UploadCallDep = Annotated[UploadCall, Depends(get_upload_call)]
