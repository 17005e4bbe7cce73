"""Dependencies as ``Annotated`` aliases: the services container, a DB session, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from upload_service.api.requestid import request_id_of
from upload_service.api.auditing import note_auth_failure
from upload_service.auth import Principal, authenticate
from upload_service.errors import ServiceError
from upload_service.container import Services
from upload_service.service import unavailable


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
    """The caller, from ``Authorization: Bearer``; a refusal is an ``auth:failed`` event."""
    try:
        with services.sessions() as session:
            principal = authenticate(session, request.headers.get("authorization"))
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


async def get_request_id(request: Request) -> str:
    return request_id_of(request.scope)


RequestIdDep = Annotated[str, Depends(get_request_id)]
