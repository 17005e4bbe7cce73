"""Recording an audit event never fails a request: what a client can make long is clamped and
marked, never refused (issue: a 4 KB path made ``auth:failed`` raise while it was built)."""

from __future__ import annotations

import json

import pytest

from upload_service.audit import AuditAction, AuditEvent
from upload_service.audit.events import MAX_DETAIL_TEXT_CHARS, MAX_DETAILS_BYTES, MAX_TEXT_CHARS


def auth_failed(**fields: object) -> AuditEvent:
    return AuditEvent(action=AuditAction.AUTH_FAILED, outcome="failure", error_code="UNAUTHENTICATED", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("path_bytes", [4 * 1024, 8 * 1024, 64 * 1024, 1024 * 1024])
def test_a_long_path_is_clamped_and_marked(path_bytes: int) -> None:
    event = auth_failed(details={"path": "/v1/uploads/" + "a" * path_bytes})
    assert event.details is not None
    assert len(event.details["path"]) == MAX_DETAIL_TEXT_CHARS
    assert event.details["truncated"] == ["details.path"]
    assert len(event.to_json()) < MAX_DETAILS_BYTES + 1024
    assert AuditEvent.from_json(event.to_json()) == event  # clamping twice changes nothing


def test_multibyte_and_many_fields_fall_back_to_a_size_mark() -> None:
    details = {f"k{i}": "é" * 2000 for i in range(20)}
    event = auth_failed(details=details, declared_type="image/png;" + "x" * 1000)
    assert event.details is not None
    assert set(event.details) == {"truncated", "details_bytes"}
    assert event.details["truncated"] == ["declared_type", "details"]
    assert event.details["details_bytes"] > MAX_DETAILS_BYTES
    assert len(json.dumps(event.details).encode()) <= MAX_DETAILS_BYTES
    assert event.declared_type is not None and len(event.declared_type) == MAX_TEXT_CHARS
    assert AuditEvent.from_json(event.to_json()) == event


def test_nested_strings_are_clamped_without_recursion() -> None:
    deep: object = "x" * 5000
    for _ in range(50):
        deep = [deep]
    event = auth_failed(details={"deep": deep})
    assert event.details is not None and event.details["truncated"] == ["details.deep"]
    inner = event.details["deep"]
    while isinstance(inner, list):
        inner = inner[0]
    assert len(inner) == MAX_DETAIL_TEXT_CHARS


@pytest.mark.parametrize("name,limit", [("key_id", 64), ("upload_id", 64), ("request_id", 128), ("sha256", 64)])
def test_over_long_identifiers_are_clamped_and_marked(name: str, limit: int) -> None:
    event = auth_failed(**{name: "z" * (limit * 4)})
    assert len(getattr(event, name)) == limit
    assert event.details == {"truncated": [name]}


def test_client_addr_and_types_are_clamped_and_nul_free() -> None:
    event = auth_failed(client_addr="1" * 1000, detected_type="a/b\x00" * 200)
    assert len(event.client_addr or "") == MAX_TEXT_CHARS
    assert "\x00" not in (event.detected_type or "")
    assert event.details == {"truncated": ["client_addr", "detected_type"]}
