"""Event types, bodies and signatures. Pure: no DB, no network.

Signatures follow the Standard Webhooks convention: the secret is ``whsec_`` + base64 of random
bytes; each request carries ``webhook-id`` (the event's id, the same on every retry),
``webhook-timestamp`` (seconds, the time of this attempt) and ``webhook-signature``:
space-separated ``v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>``, one per
secret in use (two during a rotation's overlap).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


class EventType(StrEnum):
    UPLOAD_ACCEPTED = "upload.accepted"
    UPLOAD_DONE = "upload.done"
    UPLOAD_FAILED = "upload.failed"
    UPLOAD_DELETED = "upload.deleted"


ALL_EVENTS: tuple[str, ...] = tuple(e.value for e in EventType)


def parse_event_types(text: str | Iterable[str] | None) -> list[str]:
    """A subscription list (``upload.done,upload.failed``); none: every event. ValueError on an unknown one."""
    if text is None:
        return list(ALL_EVENTS)
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    parts = [p for p in parts if p]
    unknown = sorted(set(parts) - set(ALL_EVENTS))
    if unknown:
        raise ValueError(f"unknown event types {unknown}; known: {list(ALL_EVENTS)}")
    if not parts:
        raise ValueError(f"subscribe to at least one of {list(ALL_EVENTS)}")
    return [e for e in ALL_EVENTS if e in parts]


def new_event_id() -> str:
    return "msg_" + secrets.token_hex(13)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (its base64-decoded part)."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def sign(secrets_: Sequence[str], event_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: one ``v1,`` signature per secret."""
    message = f"{event_id}.{timestamp}.".encode() + body
    signatures = []
    for secret in secrets_:
        digest = hmac.new(secret_bytes(secret), message, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(digest).decode())
    return " ".join(signatures)


def format_time(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_body(event_type: str, occurred_at: datetime, data: dict[str, Any]) -> str:
    """The JSON body: ``{"type", "timestamp", "data"}`` (Standard Webhooks' recommended shape)."""
    return json.dumps(
        {"type": event_type, "timestamp": format_time(occurred_at), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
