"""``GET /v1/uploads``: its filters and its page cursor. Pure: no DB, no web framework.

Pages are keyset pages over ``(created_at desc, id desc)``: a cursor names the last record of
the previous page, and the next page starts strictly after it. Unlike offsets, uploads created
or deleted between two requests never make a page repeat or skip a record that stays.

A cursor is opaque to clients: base64url (no padding) of ``created_at`` in microseconds since
the epoch, the upload id, and a 12-byte check digest over both and over the query it was made
for (tenant, upload token, filters). Anything that is not a cursor this service made for this
same query (garbage, truncated, edited, used with other filters or by another tenant) is
``400 BAD_REQUEST``. The digest is not keyed: forging a cursor gains nothing, since every page
is read with the caller's own tenant (and token) filter anyway; it is there so that a damaged
cursor gets a clear refusal instead of a quietly wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from upload_service.errors import ErrorCode, ServiceError

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 200
MAX_TAG_CHARS = 64

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ID = re.compile(r"[0-9a-f]{32}")
_DIGEST_BYTES = 12
#: 8 bytes of microseconds, 16 bytes of id (32 hex characters), the digest.
_CURSOR_BYTES = 8 + 16 + _DIGEST_BYTES
_CURSOR_TEXT = re.compile(r"[A-Za-z0-9_-]{1,100}")
#: RFC 3339 date-time: a full date, a time, an offset (``Z`` or ``±hh:mm``) — never a naive time.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)
_CURSOR_DOMAIN = b"upload-service/list-cursor/v1\0"


@dataclass(frozen=True)
class ListFilters:
    """Who lists (tenant, and the upload token if the caller holds one) and what they asked for."""

    tenant: str
    token_id: str | None = None
    status: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    tag: str | None = None

    def binding(self) -> bytes:
        """What a cursor is valid for: the same caller and the same filters (not the page size)."""
        parts = (
            self.tenant, self.token_id or "", self.status or "",
            _stamp(self.created_after), _stamp(self.created_before), self.tag or "",
        )
        return "\0".join(parts).encode()


@dataclass(frozen=True)
class Position:
    """The last record of a page: the next page starts strictly after it."""

    created_at: datetime
    upload_id: str


def encode_cursor(position: Position, filters: ListFilters) -> str:
    if not _ID.fullmatch(position.upload_id):
        raise ValueError("upload ids are 32 lower-case hex characters")
    micros = _to_micros(position.created_at)
    payload = struct.pack(">q", micros) + bytes.fromhex(position.upload_id)
    raw = payload + _digest(payload, filters)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, filters: ListFilters) -> Position:
    """The position a cursor names, or ``400 BAD_REQUEST`` for anything this service did not
    make for this same query."""
    if not _CURSOR_TEXT.fullmatch(cursor):
        raise _bad_cursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise _bad_cursor() from None
    if len(raw) != _CURSOR_BYTES:
        raise _bad_cursor()
    payload, digest = raw[:-_DIGEST_BYTES], raw[-_DIGEST_BYTES:]
    if not hmac.compare_digest(digest, _digest(payload, filters)):
        raise _bad_cursor()
    (micros,) = struct.unpack(">q", payload[:8])
    try:
        created_at = _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise _bad_cursor() from None
    return Position(created_at=created_at, upload_id=payload[8:].hex())


def parse_timestamp(value: str | None, field: str) -> datetime | None:
    """An RFC 3339 date-time with its offset (``2026-11-30T06:00:00Z``), or 422 VALIDATION_FAILED."""
    if value is None:
        return None
    if not _RFC3339.fullmatch(value):
        raise _invalid(field, "must be an RFC 3339 date-time with an offset, e.g. 2026-11-30T06:00:00Z")
    text = value.upper().replace("Z", "+00:00")
    date, _, rest = text.partition(text[10])
    clock, offset = rest[:-6], rest[-6:]
    if "." in clock:  # Python keeps microseconds: cut longer fractions, pad shorter ones
        clock, fraction = clock.split(".")
        clock = f"{clock}.{fraction[:6].ljust(6, '0')}"
    try:
        return datetime.fromisoformat(f"{date}T{clock}{offset}").astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise _invalid(field, "is not a valid date-time") from None


def check_tag(tag: str | None) -> str | None:
    if tag is not None and not 1 <= len(tag) <= MAX_TAG_CHARS:
        raise _invalid("tag", f"must be 1 to {MAX_TAG_CHARS} characters")
    return tag


def check_status(status: str | None, visible: tuple[str, ...]) -> str | None:
    if status is not None and status not in visible:
        raise _invalid("status", f"must be one of {', '.join(visible)}")
    return status


def check_page_size(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise _invalid("limit", f"must be 1 to {MAX_PAGE_SIZE}")
    return limit


def _digest(payload: bytes, filters: ListFilters) -> bytes:
    return hashlib.sha256(_CURSOR_DOMAIN + filters.binding() + b"\0" + payload).digest()[:_DIGEST_BYTES]


def _to_micros(moment: datetime) -> int:
    moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _stamp(moment: datetime | None) -> str:
    return "" if moment is None else str(_to_micros(moment))


def _bad_cursor() -> ServiceError:
    return ServiceError(ErrorCode.BAD_REQUEST, "the cursor is not valid for this listing; start again without one")


def _invalid(field: str, message: str) -> ServiceError:
    return ServiceError(
        ErrorCode.VALIDATION_FAILED,
        f"{field} {message}",
        details=[{"loc": ["query", field], "msg": message, "type": "value_error"}],
    )
