"""The OpenAPI document, made to tell the truth about errors, credentials and headers.

FastAPI's generated document knows only the success status of each route and a ``422`` in its
own ``{"detail": [...]}`` shape, which the API never sends. This post-processor keeps what
FastAPI derives (paths, parameters, bodies, success models) and adds, for every operation:

- each error status the route can answer, all with the one ``ErrorResponse`` schema, the codes
  in the description and in ``x-error-codes``. The codes come from the error table
  (``upload_service.errors``): a route's own codes (``ROUTE_ERRORS``), plus what its
  dependencies imply (a credential: ``UNAUTHENTICATED``/``FORBIDDEN``; a DB session:
  ``DEPENDENCY_UNAVAILABLE``; parameters: ``VALIDATION_FAILED``; path ids: ``NOT_FOUND``), plus
  what the nginx front answers by itself on every route (``FRONT_ERRORS``);
- the Bearer security scheme on routes that need a credential;
- readable operation ids (the endpoint function's name);
- the headers: ``X-Request-ID`` (request and every response), ``Idempotency-Key`` on uploads,
  ``Location`` on 202/201, ``Retry-After`` on 429/503/507, ``WWW-Authenticate`` on 401;
- the upload status enum.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from upload_service.api.deps import get_principal, get_session, get_upload_call
from upload_service.db.models import VISIBLE_STATUSES
from upload_service.errors import ErrorCode

_JSON = "application/json"
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
#: Answered with Retry-After: the app's 503/507 (admission, dependencies) and nginx's 429.
_RETRY_AFTER_STATUSES = {429, 503, 507}

#: Codes a route answers beyond what its dependencies imply, by endpoint function name.
ROUTE_ERRORS: dict[str, tuple[ErrorCode, ...]] = {
    "create_upload": (
        ErrorCode.BAD_REQUEST, ErrorCode.REQUEST_TIMEOUT, ErrorCode.MALFORMED_MULTIPART, ErrorCode.MISSING_FILE,
        ErrorCode.TOO_MANY_FILES, ErrorCode.EMPTY_FILE, ErrorCode.FILE_TOO_LARGE, ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        ErrorCode.CONTENT_TYPE_MISMATCH, ErrorCode.EXTENSION_MISMATCH, ErrorCode.IDEMPOTENCY_CONFLICT,
        ErrorCode.INSUFFICIENT_STORAGE, ErrorCode.DEPENDENCY_UNAVAILABLE,
    ),
    "patch_upload": (ErrorCode.NO_FIELDS,),
    "delete_upload": (ErrorCode.DEPENDENCY_UNAVAILABLE,),
    "read_audit": (ErrorCode.BAD_REQUEST,),
    "list_uploads": (ErrorCode.BAD_REQUEST,),  # a cursor it did not make for this query
}

#: What nginx answers by itself, on any route (docs/operations.md, "What nginx answers itself").
FRONT_ERRORS: tuple[ErrorCode, ...] = (
    ErrorCode.BAD_REQUEST, ErrorCode.RATE_LIMITED, ErrorCode.HEADERS_TOO_LARGE, ErrorCode.UPSTREAM_UNAVAILABLE,
)

#: Routes whose 201/202 answer names a new resource in ``Location`` (a minted token is not one).
_CREATES_RESOURCE = {"create_upload", "add_webhook_endpoint"}

#: Routes whose failure body is their own report, not an error (the probes).
_REPORTS = {"readyz", "health"}


class ErrorDetail(BaseModel):
    code: ErrorCode = Field(description="The machine code; see docs/errors.md. Act on this, not on the message.")
    message: str = Field(description="For people; may change between releases.")
    request_id: str = Field(description="Equal to the X-Request-ID response header.")
    details: Any = Field(
        description="Code-specific: limit_bytes (FILE_TOO_LARGE), detected_type (UNSUPPORTED_MEDIA_TYPE), "
        "a list of {loc, msg, type} (VALIDATION_FAILED), or null.",
    )


class ErrorResponse(BaseModel):
    """Every error answer, from the app or the nginx front."""

    error: ErrorDetail


class CheckReport(BaseModel):
    status: str = Field(description="ok or fail")
    latency_ms: float | None = Field(default=None, description="/health only (/readyz gives verdicts only)")
    detail: str | None = Field(default=None, description="/health only")


class HealthReport(BaseModel):
    status: str = Field(description="ok or degraded")
    checks: dict[str, CheckReport]


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with the post-processed document (built once, cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def api_routes(app: FastAPI) -> list[Any]:
    """The documented API routes, as FastAPI sees them once routers are included (each has the
    full ``path_format``, ``name``, ``methods``, ``dependant``)."""
    return [
        context for context in routing.iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute) and context.include_in_schema
    ]


def _dependency_calls(dependant: Dependant) -> Iterable[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _dependency_calls(sub)


def _has_parameters(dependant: Dependant) -> bool:
    if dependant.path_params or dependant.query_params or dependant.header_params or dependant.body_params:
        return True
    return any(_has_parameters(sub) for sub in dependant.dependencies)


#: The dependencies that authenticate the caller (the upload route's one dependency does too).
_AUTHENTICATING = frozenset({get_principal, get_upload_call})


def needs_credential(route: Any) -> bool:
    return not _AUTHENTICATING.isdisjoint(_dependency_calls(route.dependant))


def error_codes(route: Any) -> list[ErrorCode]:
    """Every code a route can answer: its own, its dependencies', the front's, and INTERNAL."""
    codes: set[ErrorCode] = {ErrorCode.INTERNAL, *FRONT_ERRORS, *ROUTE_ERRORS.get(route.name, ())}
    calls = set(_dependency_calls(route.dependant))
    if not _AUTHENTICATING.isdisjoint(calls):
        codes |= {ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN, ErrorCode.DEPENDENCY_UNAVAILABLE}
    if get_session in calls:
        codes.add(ErrorCode.DEPENDENCY_UNAVAILABLE)
    if _has_parameters(route.dependant) or route.name in ROUTE_ERRORS:
        codes.add(ErrorCode.VALIDATION_FAILED)
    if route.dependant.path_params:
        codes.add(ErrorCode.NOT_FOUND)
    if route.dependant.body_params or (route.openapi_extra or {}).get("requestBody"):
        codes.add(ErrorCode.FILE_TOO_LARGE)  # nginx's body cap applies to every body
    return sorted(codes, key=list(ErrorCode).index)


def error_statuses(route: Any) -> dict[int, list[ErrorCode]]:
    by_status: dict[int, list[ErrorCode]] = defaultdict(list)
    for code in error_codes(route):
        for status in code.statuses:
            by_status[status].append(code)
    return dict(sorted(by_status.items()))


def _header(description: str, schema: dict[str, Any] | None = None, *, required: bool = True) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema or {"type": "string"}}


_REQUEST_ID_HEADER = _header("The request id: the client's X-Request-ID when valid, else generated. In every log line.")
_HEADERS_BY_STATUS: dict[int, dict[str, dict[str, Any]]] = {
    401: {"WWW-Authenticate": _header("Bearer")},
    **{
        status: {"Retry-After": _header("Seconds to wait before retrying.", {"type": "integer"})}
        for status in _RETRY_AFTER_STATUSES
    },
}


def _error_response(status: int, codes: list[ErrorCode]) -> dict[str, Any]:
    lines = [f"- `{code.value}`: {code.doc.when}" for code in codes]
    return {
        "description": "\n".join(lines),
        "headers": {"X-Request-ID": _REQUEST_ID_HEADER, **_HEADERS_BY_STATUS.get(status, {})},
        "content": {_JSON: {"schema": _ERROR_REF, "examples": {
            code.value: {"value": {"error": {"code": code.value, "message": "…", "request_id": "…", "details": None}}}
            for code in codes
        }}},
        "x-error-codes": [code.value for code in codes],
    }


def _add_schemas(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorResponse, HealthReport):
        generated = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(generated.pop("$defs", {}))
        components[model.__name__] = generated
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    upload = components.get("UploadOut", {}).get("properties", {})
    if "status" in upload:
        upload["status"] = {
            "type": "string", "enum": [str(s) for s in VISIBLE_STATUSES], "title": "Status",
            "description": "queued → processing → done | failed (a deleted upload answers 404)",
        }
    security = schema["components"].setdefault("securitySchemes", {})
    security["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`upk_…`) or a short-lived upload token (`ust_…`) in `Authorization: Bearer`.",
    }


def _add_request_headers(operation: dict[str, Any], route: Any) -> None:
    parameters = operation.setdefault("parameters", [])
    names = {p["name"].lower() for p in parameters if p.get("in") == "header"}
    wanted = [("X-Request-ID", "Your request id (8-128 of A-Z a-z 0-9 . _ : -); else one is generated.",
               {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{8,128}$"})]
    if route.name == "create_upload":
        wanted.append(("Idempotency-Key", "Retries with the same key and body answer the first upload's record "
                       "(with Idempotent-Replayed: true) instead of creating another.",
                       {"type": "string", "minLength": 1, "maxLength": 255}))
    for name, description, header_schema in wanted:
        if name.lower() not in names:
            parameters.append({"name": name, "in": "header", "required": False,
                               "description": description, "schema": header_schema})


def _add_success_headers(operation: dict[str, Any], route: Any) -> None:
    for status, response in operation["responses"].items():
        if not status.startswith(("2", "3")):
            continue
        headers = response.setdefault("headers", {})
        headers["X-Request-ID"] = _REQUEST_ID_HEADER
        if status in ("201", "202") and route.name in _CREATES_RESOURCE:
            headers["Location"] = _header("The URL of the created resource.")
        if status.startswith("3"):
            headers["Location"] = _header("Where the resource is (a short-lived presigned URL).")
        if route.name == "create_upload":
            headers["Idempotent-Replayed"] = _header(
                "`true` when this answers an earlier request with the same Idempotency-Key.", required=False
            )


def build_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description or None,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    _add_schemas(schema)
    seen_ids: set[str] = set()
    for route in api_routes(app):
        path = schema["paths"][route.path_format]
        for method in route.methods:
            operation = path[method.lower()]
            operation["operationId"] = route.name
            assert route.name not in seen_ids, f"two operations named {route.name}"
            seen_ids.add(route.name)
            if needs_credential(route):
                operation["security"] = [{"bearer": []}]
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            _add_request_headers(operation, route)
            _add_success_headers(operation, route)
            for status, codes in error_statuses(route).items():
                if route.name in _REPORTS and status == 503:
                    continue
                responses[str(status)] = _error_response(status, codes)
            if route.name in _REPORTS:
                report = {"content": {_JSON: {"schema": {"$ref": "#/components/schemas/HealthReport"}}}}
                responses["200"] = {"description": "Every check passed.", **report}
                responses["503"] = {"description": "A check failed; `checks` names it.", **report}
    return schema
