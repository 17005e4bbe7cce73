"""The one place where failures become HTTP responses in the API's error shape:
``{"error": {"code", "message", "request_id", "details"}}`` plus the ``X-Request-ID`` header."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from upload_service.api.auditing import failure_events_task, note, note_auth_failure
from upload_service.api.requestid import request_id_of
from upload_service.audit import AuditAction
from upload_service.errors import ErrorCode, ServiceError

log = logging.getLogger(__name__)

_BY_STATUS = {code.status: code for code in reversed(list(ErrorCode))}


def error_response(
    request: Request,
    code: ErrorCode,
    message: str,
    *,
    details: Any = None,
    headers: dict[str, str] | None = None,
    status: int | None = None,
) -> JSONResponse:
    request_id = request_id_of(request.scope)
    body = {"error": {"code": code.value, "message": message, "request_id": request_id, "details": details}}
    return JSONResponse(
        body,
        status_code=status or code.status,
        headers={**(headers or {}), "X-Request-ID": request_id, "Cache-Control": "no-store"},
        background=failure_events_task(request),
    )


async def on_service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    level = logging.WARNING if exc.status >= 500 else logging.INFO
    log.log(level, "request failed: %s %s", exc.code.value, exc.internal or exc.message)
    if exc.code is ErrorCode.FORBIDDEN:
        note_auth_failure(request, exc.code.value)
    return error_response(request, exc.code, exc.message, details=exc.details, headers=exc.headers)


async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _BY_STATUS.get(exc.status_code, ErrorCode.BAD_REQUEST if exc.status_code < 500 else ErrorCode.INTERNAL)
    message = {
        ErrorCode.NOT_FOUND: "no such resource",
        ErrorCode.METHOD_NOT_ALLOWED: f"method {request.method} is not allowed here",
    }.get(code, str(exc.detail))
    return error_response(request, code, message, headers=dict(exc.headers or {}), status=exc.status_code)


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
    return error_response(request, ErrorCode.VALIDATION_FAILED, "the request is not valid", details=details)


async def on_unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    action = request.scope.get("state", {}).get(_UNEXPECTED_ERROR_EVENT)
    if action is not None:
        note(request, action, "failure", error_code=ErrorCode.INTERNAL.value)
    # Whatever state the request was left in (a body half read), the connection is not reused.
    return error_response(request, ErrorCode.INTERNAL, "internal error", headers={"Connection": "close"})


_UNEXPECTED_ERROR_EVENT = "unexpected_error_event"


def audit_unexpected_errors_as(request: Request, action: AuditAction) -> None:
    """From here on, an exception no handler expected, raised anywhere on this request
    (a later dependency included), is also recorded as ``action`` with ``INTERNAL`` — so a
    refusal is audited even when it was a bug that refused."""
    request.scope.setdefault("state", {})[_UNEXPECTED_ERROR_EVENT] = action


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unhandled)
