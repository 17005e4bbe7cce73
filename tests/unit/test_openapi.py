"""The OpenAPI document (built without starting any service): one error schema on every error
status of every operation, generated from the error table; the Bearer scheme; readable
operation ids; the headers; the status enum; no trace of FastAPI's ``{"detail"}`` 422."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from upload_service.api.openapi import FRONT_ERRORS, api_routes, error_codes, needs_credential
from upload_service.app import create_app
from upload_service.db.models import VISIBLE_STATUSES
from upload_service.errors import ErrorCode
from upload_service.nginxconf import DOCS_CSP, INTERNAL_PATHS, render_nginx_config
from upload_service.settings import Settings

ERROR_REF = "#/components/schemas/ErrorResponse"


@pytest.fixture(autouse=True)
def no_upload_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [k for k in os.environ if k.startswith("UPLOAD_")]:
        monkeypatch.delenv(name)
    yield


@pytest.fixture(scope="module")
def app() -> Any:
    return create_app(Settings())


@pytest.fixture(scope="module")
def schema(app: Any) -> dict[str, Any]:
    return app.openapi()  # type: ignore[no-any-return]


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


def validator(schema: dict[str, Any], ref: str) -> jsonschema.Validator:
    """A validator for one component, resolving ``#/components/...`` refs in the document."""
    return jsonschema.Draft202012Validator({"$ref": ref, "components": schema["components"]})


def test_operation_ids_are_the_endpoint_names(schema: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(schema)]
    assert len(ids) == len(set(ids))
    for operation_id in ids:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", operation_id), operation_id
        assert not operation_id.endswith(("_get", "_post", "_patch", "_delete")), operation_id
    assert {"create_upload", "read_upload", "patch_upload", "delete_upload", "read_audit"} <= set(ids)


def test_every_error_status_has_the_error_schema_and_its_codes(schema: dict[str, Any]) -> None:
    for method, path, operation in operations(schema):
        errors = {int(s): r for s, r in operation["responses"].items() if int(s) >= 400}
        assert errors, (method, path)
        for status, response in errors.items():
            body = response["content"]["application/json"]["schema"]["$ref"]
            if body.endswith("/HealthReport"):
                assert (path, status) in {("/readyz", 503), ("/health", 503)}
                continue
            assert body == ERROR_REF, (method, path, status)
            codes = [ErrorCode(c) for c in response["x-error-codes"]]
            assert codes and all(status in code.statuses for code in codes), (method, path, status)
            for code in codes:
                assert f"`{code.value}`" in response["description"]
                assert code.value in response["content"]["application/json"]["examples"]
            assert "X-Request-ID" in response["headers"]
            if status in (429, 503, 507):
                assert response["headers"]["Retry-After"]["required"], (method, path, status)
        for code in FRONT_ERRORS:  # nginx can answer these on any route
            assert all(str(s) in operation["responses"] for s in code.statuses), (method, path, code)


def test_fastapis_422_shape_is_gone(schema: dict[str, Any]) -> None:
    text = json.dumps(schema)
    assert "HTTPValidationError" not in text and '"ValidationError"' not in text
    post = schema["paths"]["/v1/uploads"]["post"]["responses"]["422"]
    assert post["content"]["application/json"]["schema"]["$ref"] == ERROR_REF
    assert post["x-error-codes"] == ["VALIDATION_FAILED"]


def test_the_error_schema_accepts_real_bodies_and_refuses_others(schema: dict[str, Any]) -> None:
    check = validator(schema, ERROR_REF)
    good = {"error": {"code": "FILE_TOO_LARGE", "message": "too big", "request_id": "abcdefgh", "details": {"limit_bytes": 1}}}
    check.validate(good)
    check.validate({"error": {**good["error"], "details": None}})
    for bad in (
        {"detail": [{"loc": ["query"], "msg": "x", "type": "y"}]},
        {"error": {**good["error"], "code": "NOT_A_CODE"}},
        {"error": {k: v for k, v in good["error"].items() if k != "details"}},
    ):
        assert not check.is_valid(bad), bad
    assert set(schema["components"]["schemas"]["ErrorCode"]["enum"]) == {c.value for c in ErrorCode}


def test_every_http_code_is_documented_on_some_route(schema: dict[str, Any]) -> None:
    documented = {c for _, _, op in operations(schema) for r in op["responses"].values() for c in r.get("x-error-codes", [])}
    # 405 answers a method the route does not have: it belongs to no operation (docs/errors.md has it).
    assert {c.value for c in ErrorCode} - documented == {"METHOD_NOT_ALLOWED"}


def test_the_upload_route_documents_what_the_ingest_refuses(schema: dict[str, Any]) -> None:
    responses = schema["paths"]["/v1/uploads"]["post"]["responses"]
    assert set(responses["415"]["x-error-codes"]) == {"UNSUPPORTED_MEDIA_TYPE", "CONTENT_TYPE_MISMATCH", "EXTENSION_MISMATCH"}
    assert {"EMPTY_FILE", "MISSING_FILE", "MALFORMED_MULTIPART", "TOO_MANY_FILES"} <= set(responses["400"]["x-error-codes"])
    assert responses["413"]["x-error-codes"] == ["FILE_TOO_LARGE"]
    assert responses["507"]["x-error-codes"] == ["INSUFFICIENT_STORAGE"]
    assert responses["504"]["x-error-codes"] == ["UPSTREAM_UNAVAILABLE"]
    assert {"Location", "X-Request-ID", "Idempotent-Replayed"} <= set(responses["202"]["headers"])
    assert "404" not in responses  # no path id to miss


def test_bearer_security_on_exactly_the_routes_that_need_a_credential(app: Any, schema: dict[str, Any]) -> None:
    scheme = schema["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for route in api_routes(app):
        for method in route.methods:
            operation = schema["paths"][route.path_format][method.lower()]
            assert (operation.get("security") == [{"bearer": []}]) == needs_credential(route), route.name
            has_401 = "401" in operation["responses"]
            assert has_401 == needs_credential(route), route.name
            assert {str(s) for c in error_codes(route) for s in c.statuses} <= set(operation["responses"]), route.name
    assert "security" not in schema["paths"]["/livez"]["get"]


def test_request_headers_are_declared(schema: dict[str, Any]) -> None:
    for method, path, operation in operations(schema):
        headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
        assert "X-Request-ID" in headers, (method, path)
    upload_headers = {p["name"]: p for p in schema["paths"]["/v1/uploads"]["post"]["parameters"] if p["in"] == "header"}
    assert upload_headers["Idempotency-Key"]["schema"]["maxLength"] == 255


def test_the_status_enum_is_the_visible_statuses(schema: dict[str, Any]) -> None:
    status = schema["components"]["schemas"]["UploadOut"]["properties"]["status"]
    assert status["enum"] == [str(s) for s in VISIBLE_STATUSES] == ["queued", "processing", "done", "failed"]


def test_docs_ui_is_served_by_the_app_but_only_on_nginxs_internal_listener(app: Any) -> None:
    paths = {getattr(r, "path", None) for r in app.routes}
    assert {"/docs", "/openapi.json"} <= paths
    assert {"/docs", "/openapi.json"} <= set(INTERNAL_PATHS)
    public = render_nginx_config(Settings(nginx={"internal_listen": "127.0.0.1:9099"}))
    public_server, internal_server = public.split("# The internal listener")
    for path in ("/docs", "/openapi.json"):
        assert re.search(r"location \^~ " + re.escape(path) + r" \{\s*return 404;", public_server), path
        assert re.search(r"location \^~ " + re.escape(path) + r" \{[^}]*proxy_pass http://upload_api;", internal_server), path
    docs = re.search(r"location \^~ /docs \{([^}]*)\}", internal_server)
    assert docs and f'Content-Security-Policy "{DOCS_CSP}"' in docs.group(1)
