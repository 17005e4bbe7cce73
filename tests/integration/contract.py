"""Assertions on the API's contract, shared by the API and nginx tests: the error shape, and
every answer against the OpenAPI document the server serves."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import jsonschema


def new_request_id(label: str = "test") -> str:
    """A client-chosen request id that passes the app's (and nginx's) validation rule."""
    return f"{label}-{uuid.uuid4().hex}"


def assert_error(response: httpx.Response, status: int, code: str) -> dict:  # type: ignore[type-arg]
    """The exact error shape, with the body's request id equal to the ``X-Request-ID`` header."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "request_id", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["request_id"] == response.headers["x-request-id"], (error, response.headers)
    assert "Traceback" not in response.text and "/tmp" not in response.text
    return error


def operation_for(schema: dict[str, Any], method: str, path: str) -> tuple[str, dict[str, Any]]:
    for template, methods in schema["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in methods:
            return template, methods[method.lower()]
    raise AssertionError(f"{method} {path} is not in the document")


def check_against(schema: dict[str, Any], response: httpx.Response) -> str:
    """Assert the response is what the document says; returns "METHOD template status"."""
    request = response.request
    template, operation = operation_for(schema, request.method, request.url.path)
    status = str(response.status_code)
    assert status in operation["responses"], f"{request.method} {template} answered undocumented {status}: {response.text[:200]}"
    documented = operation["responses"][status]
    if response.status_code >= 400:
        ref = documented["content"]["application/json"]["schema"]["$ref"]
        validator = jsonschema.Draft202012Validator({"$ref": ref, "components": schema["components"]})
        body = response.json()
        validator.validate(body)
        if ref.endswith("/ErrorResponse"):
            assert body["error"]["code"] in documented["x-error-codes"], (template, status, body)
    for header, declared in documented.get("headers", {}).items():
        if declared.get("required"):
            assert header.lower() in response.headers, (template, status, header)
    return f"{request.method} {template} {status}"
