"""The audit vocabulary and the event value object. Pure: no DB, no files, no framework.

Warehouse's lesson: an audit trail is only searchable if its actions are a closed set of tags,
so an unknown action is refused when the event is built, not discovered when someone queries.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any


class AuditAction(str, Enum):
    """Every decision the service records. Adding one is a deliberate code change."""

    UPLOAD_ACCEPTED = "upload:accepted"
    UPLOAD_REJECTED = "upload:rejected"
    UPLOAD_METADATA_CHANGED = "upload:metadata_changed"
    UPLOAD_DELETED = "upload:deleted"
    ARTIFACT_URL_ISSUED = "artifact:url_issued"
    PROCESSING_STARTED = "processing:started"
    PROCESSING_DONE = "processing:done"
    PROCESSING_FAILED = "processing:failed"
    KEY_CREATED = "key:created"
    KEY_REVOKED = "key:revoked"
    TOKEN_ISSUED = "token:issued"
    AUTH_FAILED = "auth:failed"
    WEBHOOK_ENDPOINT_ADDED = "webhook:endpoint_added"
    WEBHOOK_ENDPOINT_REMOVED = "webhook:endpoint_removed"
    WEBHOOK_SECRET_ROTATED = "webhook:secret_rotated"
    WEBHOOK_REDELIVERED = "webhook:redelivered"
    WEBHOOK_DEAD = "webhook:dead"


OUTCOMES = frozenset({"success", "failure"})
#: Serialized ``details`` are clamped to this: details name fields, they don't carry payloads.
MAX_DETAILS_BYTES = 4096
#: Free text that may come from a hostile client (a declared Content-Type) is clamped to this,
#: so an audit write can never fail on an over-long value.
MAX_TEXT_CHARS = 255
#: One string inside ``details`` (a request path, an artifact name) is clamped to this.
MAX_DETAIL_TEXT_CHARS = 1024
#: The ``details`` key listing the fields that were clamped (``"details.path"``, ``"declared_type"``).
TRUNCATED_KEY = "truncated"

_EVENT_ID = re.compile(r"^[0-9a-f]{32}$")
#: Identifiers our own code produces: a wrong type or an empty one is a bug, refused loudly; an
#: over-long one is clamped like any text (a request must never fail on its audit event) —
#: except the tenant, which names the hash chain: a clamped tenant would file the event in
#: another tenant's chain, so it is refused (``api.auditing.note`` then records it tenant-less).
_ID_LIMITS = {"tenant": 63, "key_id": 64, "upload_id": 64, "request_id": 128, "sha256": 64}
_STRICT_IDS = frozenset({"tenant"})
_CLAMPED = ("client_addr", "declared_type", "detected_type", "error_code")


def format_timestamp(value: datetime) -> str:
    """The one timestamp format of journals, exports and hashes: UTC, microseconds, ``Z``."""
    if value.tzinfo is None:
        # Only SQLite hands back naive datetimes, and everything stored was written in UTC.
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, kw_only=True)
class AuditEvent:
    """One decision: who (tenant, key id — never the key), what, when, from where, on what.

    Validated and normalized on construction (UTC time, JSON-clean details, clamped free text),
    so the form written to the DB or the journal is the form read back and hashed.
    """

    action: AuditAction
    outcome: str
    tenant: str | None = None
    key_id: str | None = None
    client_addr: str | None = None
    request_id: str | None = None
    upload_id: str | None = None
    sha256: str | None = None
    declared_type: str | None = None
    detected_type: str | None = None
    size: int | None = None
    error_code: str | None = None
    details: dict[str, Any] | None = field(default=None, hash=False)
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "action", AuditAction(self.action))  # ValueError on an unknown action
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, not {self.outcome!r}")
        if not isinstance(self.event_id, str) or not _EVENT_ID.match(self.event_id):
            raise ValueError("event_id must be 32 lower-case hex characters")
        if not isinstance(self.occurred_at, datetime) or self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at must be a timezone-aware datetime")
        set_(self, "occurred_at", self.occurred_at.astimezone(timezone.utc))
        truncated: list[str] = []
        for name, limit in _ID_LIMITS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str) or not value or "\x00" in value:
                raise ValueError(f"{name} must be a non-empty string of at most {limit} characters")
            if len(value) > limit:
                if name in _STRICT_IDS:
                    raise ValueError(f"{name} must be a non-empty string of at most {limit} characters")
                set_(self, name, value[:limit])
                truncated.append(name)
        for name in _CLAMPED:
            value = getattr(self, name)
            if value is not None:
                text = str(value).replace("\x00", "\ufffd")
                if len(text) > MAX_TEXT_CHARS:
                    text = text[:MAX_TEXT_CHARS]
                    truncated.append(name)
                set_(self, name, text)
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0):
            raise ValueError("size must be a non-negative integer")
        if self.details is not None or truncated:
            set_(self, "details", _clean_details(self.details or {}, truncated))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: the action's tag, the timestamp in the one fixed format. A new dict
        (``details`` copied too); every other field is an immutable value (``dataclasses.asdict``
        deep-copied each one: a third of a group commit's time per event)."""
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        if self.details is not None:
            data["details"] = copy.deepcopy(self.details)
        data["action"] = self.action.value
        data["occurred_at"] = format_timestamp(self.occurred_at)
        return data

    def to_json(self) -> str:
        """One line of JSON (a journal line)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditEvent:
        fields = dict(data)
        fields["occurred_at"] = datetime.fromisoformat(fields["occurred_at"])
        known = cls.__dataclass_fields__.keys()
        unknown = set(fields) - set(known)
        if unknown:
            raise ValueError(f"unknown audit event fields: {sorted(unknown)}")
        return cls(**fields)

    @classmethod
    def from_json(cls, line: str) -> AuditEvent:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("an audit event is a JSON object")
        return cls.from_dict(data)


#: ``AuditEvent``'s fields, in declaration order.
_FIELD_NAMES = tuple(AuditEvent.__dataclass_fields__)


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored: its row id (the pagination key) and its place in the tenant's chain."""

    id: int
    event: AuditEvent
    seq: int
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """The export form: the event plus what is needed to re-verify the chain offline."""
        return {**self.event.to_dict(), "id": self.id, "seq": self.seq, "prev_hash": self.prev_hash, "hash": self.hash}


def _clean_details(details: dict[str, Any], truncated: list[str]) -> dict[str, Any]:
    """A JSON round trip — a private copy, in exactly the shape the DB's JSON column returns —
    clamped to its caps: each string to ``MAX_DETAIL_TEXT_CHARS``, the whole to
    ``MAX_DETAILS_BYTES`` (else only the truncation mark and the original size are kept).
    What was clamped is listed under ``TRUNCATED_KEY``; clamping twice changes nothing."""
    if not isinstance(details, dict):
        raise ValueError("details must be a JSON object")
    try:
        text = json.dumps(details, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"details must be plain JSON: {exc}") from None
    cleaned: dict[str, Any] = json.loads(text)
    marks = [str(m) for m in cleaned.pop(TRUNCATED_KEY, None) or [] if isinstance(m, str)]
    marks += truncated
    cleaned = {key: _clamp_value(value, f"details.{key}", marks) for key, value in cleaned.items()}
    if marks:
        cleaned[TRUNCATED_KEY] = sorted(set(marks))
    size = len(json.dumps(cleaned, sort_keys=True, separators=(",", ":")).encode())
    if size > MAX_DETAILS_BYTES:
        kept = sorted({m for m in marks if not m.startswith("details.")} | {"details"})
        cleaned = {TRUNCATED_KEY: kept, "details_bytes": size}
    return cleaned


def _clamp_value(value: Any, where: str, marks: list[str]) -> Any:
    """Strings at any depth cut to ``MAX_DETAIL_TEXT_CHARS``, marked by their top-level key
    (iterative: a deep value cannot hit the recursion limit)."""
    root: list[Any] = [value]
    stack: list[Any] = [root]
    while stack:
        container = stack.pop()
        pairs = list(container.items() if isinstance(container, dict) else enumerate(container))
        for index, item in pairs:
            if isinstance(item, str) and len(item) > MAX_DETAIL_TEXT_CHARS:
                container[index] = item[:MAX_DETAIL_TEXT_CHARS]
                marks.append(where)
            elif isinstance(item, dict | list):
                stack.append(item)
    return root[0]
