"""Assertions on the API's error contract, shared by the API and nginx tests."""

from __future__ import annotations

import uuid

import httpx


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
