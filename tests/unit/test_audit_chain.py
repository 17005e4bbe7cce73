"""The audit vocabulary and canonical hashing: pure, no DB.

The golden hash is pinned on purpose: if the canonical form changes, every stored chain stops
verifying, so such a change must be deliberate (and come with a migration of the chains).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest

from upload_service.audit import (
    GENESIS_HASH,
    AuditAction,
    AuditEvent,
    canonical_json,
    chain_name,
    compute_hash,
)

WHEN = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
CANONICAL = (
    '{"action":"upload:accepted","client_addr":"203.0.113.7","declared_type":"image/png",'
    '"details":{"a":["x"],"b":1},"detected_type":"image/png","error_code":null,'
    '"event_id":"0123456789abcdef0123456789abcdef","key_id":"k1","occurred_at":"2025-01-02T03:04:05.678901Z",'
    '"outcome":"success","request_id":"req-12345678","seq":1,"sha256":"' + "ab" * 32 + '","size":1234,'
    '"tenant":"acme","upload_id":"u1"}'
)
GOLDEN_HASH = "62132d8a0a15d7682676009dd0ad4fafbcc7b10bda0f27ac1dd8cf44898935c8"


def sample(**overrides: object) -> AuditEvent:
    fields: dict[str, object] = dict(
        event_id="0123456789abcdef0123456789abcdef",
        action=AuditAction.UPLOAD_ACCEPTED,
        outcome="success",
        occurred_at=WHEN,
        tenant="acme",
        key_id="k1",
        client_addr="203.0.113.7",
        request_id="req-12345678",
        upload_id="u1",
        sha256="ab" * 32,
        declared_type="image/png",
        detected_type="image/png",
        size=1234,
        details={"b": 1, "a": ["x"]},
    )
    fields.update(overrides)
    return AuditEvent(**fields)  # type: ignore[arg-type]


def test_canonical_json_is_stable() -> None:
    event = sample()
    assert canonical_json(event.to_dict(), 1) == CANONICAL
    assert compute_hash(GENESIS_HASH, event.to_dict(), 1) == GOLDEN_HASH
    assert GOLDEN_HASH == hashlib.sha256((GENESIS_HASH + CANONICAL).encode()).hexdigest()


def test_canonical_json_ignores_key_order_and_timezone_of_the_same_instant() -> None:
    reordered = sample(details={"a": ["x"], "b": 1})
    elsewhere = sample(occurred_at=WHEN.astimezone(timezone(timedelta(hours=5, minutes=30))))
    assert canonical_json(reordered.to_dict(), 1) == CANONICAL
    assert canonical_json(elsewhere.to_dict(), 1) == CANONICAL
    # The journal's JSON form hashes the same as the event it came from.
    assert compute_hash(GENESIS_HASH, AuditEvent.from_json(sample().to_json()).to_dict(), 1) == GOLDEN_HASH


@pytest.mark.parametrize(
    "change",
    [
        {"size": 1235},
        {"outcome": "failure"},
        {"tenant": "other"},
        {"details": {"a": ["y"], "b": 1}},
        {"occurred_at": WHEN + timedelta(microseconds=1)},
    ],
)
def test_any_field_change_changes_the_hash(change: dict[str, object]) -> None:
    assert compute_hash(GENESIS_HASH, sample(**change).to_dict(), 1) != GOLDEN_HASH


def test_hash_depends_on_previous_hash_and_seq() -> None:
    fields = sample().to_dict()
    assert compute_hash("f" * 64, fields, 1) != GOLDEN_HASH
    assert compute_hash(GENESIS_HASH, fields, 2) != GOLDEN_HASH


def test_vocabulary_is_closed() -> None:
    assert {action.value for action in AuditAction} == {
        "upload:accepted", "upload:rejected", "upload:metadata_changed", "upload:deleted",
        "artifact:url_issued", "processing:started", "processing:done", "processing:failed",
        "key:created", "key:revoked", "auth:failed", "token:issued",
        "webhook:endpoint_added", "webhook:endpoint_removed", "webhook:secret_rotated", "webhook:redelivered",
        "webhook:dead",
    }
    with pytest.raises(ValueError):
        AuditEvent(action="upload:exfiltrated", outcome="success")  # type: ignore[arg-type]
    line = json.loads(sample().to_json())
    line["action"] = "upload:exfiltrated"
    with pytest.raises(ValueError):
        AuditEvent.from_json(json.dumps(line))


def test_a_string_tag_is_accepted_as_its_action() -> None:
    assert AuditEvent(action="auth:failed", outcome="failure").action is AuditAction.AUTH_FAILED  # type: ignore[arg-type]


def test_json_round_trip() -> None:
    event = sample()
    assert AuditEvent.from_json(event.to_json()) == event
    assert "\n" not in event.to_json()
    fresh = AuditEvent(action=AuditAction.KEY_CREATED, outcome="success")
    assert len(fresh.event_id) == 32 and fresh.occurred_at.tzinfo is not None
    assert AuditEvent.from_json(fresh.to_json()) == fresh


@pytest.mark.parametrize(
    "bad",
    [
        {"outcome": "maybe"},
        {"occurred_at": datetime(2025, 1, 1)},  # naive
        {"event_id": "not-hex"},
        {"size": -1},
        {"size": True},
        {"tenant": "x" * 64},
        {"request_id": ""},
        {"details": {"x": object()}},
        {"details": {"x": float("nan")}},
        {"details": ["not", "an", "object"]},
    ],
)
def test_invalid_events_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        sample(**bad)


def test_unknown_fields_in_a_journal_line_are_refused() -> None:
    line = json.loads(sample().to_json())
    line["api_key"] = "usk_secret"
    with pytest.raises(ValueError):
        AuditEvent.from_json(json.dumps(line))


def test_client_supplied_text_is_clamped_not_refused() -> None:
    event = sample(declared_type="image/png;" + "x" * 1000 + "\x00")
    assert event.declared_type is not None
    assert len(event.declared_type) == 255 and "\x00" not in event.declared_type


def test_events_without_a_tenant_share_one_chain() -> None:
    assert chain_name(None) == "-"
    assert chain_name("acme") == "acme"
