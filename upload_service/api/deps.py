"""Dependencies as ``Annotated`` aliases: the services container, a DB session, the caller."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from upload_service.api.requestid import request_id_of
from upload_service.api.auditing import note_auth_failure
from upload_service.auth import Principal, authenticate, authenticate_token, is_token_credential
from upload_service.errors import ServiceError
from upload_service.container import Services
from upload_service.service import unavailable
from upload_service.tokens import Keyring


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    """A session per request: committed when the endpoint returns (before the response is
    sent), rolled back on any error, always closed."""
    session = services.sessions()
    try:
        yield session
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        raise unavailable("database", exc) from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_principal(request: Request, services: ServicesDep) -> Principal:
    """The caller, from ``Authorization: Bearer``; a refusal is an ``auth:failed`` event.

    An upload token (``ust_``) is verified against the keyring with no DB read; an API key finds
    its row."""
    authorization = request.headers.get("authorization")
    try:
        if is_token_credential(authorization):
            principal = authenticate_token(get_keyring(request), authorization, now=time.time())
        else:
            with services.sessions() as session:
                principal = authenticate(session, authorization)
    except SQLAlchemyError as exc:
        error = unavailable("database", exc)
        note_auth_failure(request, error.code.value)
        raise error from exc
    except ServiceError as exc:
        note_auth_failure(request, exc.code.value)
        raise
    request.scope.setdefault("state", {})["principal"] = principal
    return principal



PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_keyring(request: Request) -> Keyring:
    """The upload-token secrets, loaded once in the app's lifespan."""
    keyring: Keyring = request.app.state.token_keyring
    return keyring


KeyringDep = Annotated[Keyring, Depends(get_keyring)]


async def get_request_id(request: Request) -> str:
    return request_id_of(request.scope)


RequestIdDep = Annotated[str, Depends(get_request_id)]
