"""The list cursor and filter parsing, without a server: round trips, and every damaged or
foreign cursor refused with BAD_REQUEST (never another exception)."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timezone

import pytest

from upload_service import listing
from upload_service.errors import ErrorCode, ServiceError

FILTERS = listing.ListFilters(tenant="acme")


def position(micro: int = 123456) -> listing.Position:
    return listing.Position(datetime(2026, 11, 30, 6, 0, 0, micro, tzinfo=timezone.utc), uuid.uuid4().hex)


def test_a_cursor_round_trips_to_the_microsecond() -> None:
    for moment in (position(), position(0), listing.Position(datetime(1, 1, 1, tzinfo=timezone.utc), "0" * 32)):
        cursor = listing.encode_cursor(moment, FILTERS)
        assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert listing.decode_cursor(cursor, FILTERS) == moment


@pytest.mark.parametrize("other", [
    listing.ListFilters(tenant="other"),
    listing.ListFilters(tenant="acme", token_id="abc"),
    listing.ListFilters(tenant="acme", status="done"),
    listing.ListFilters(tenant="acme", tag="a"),
    listing.ListFilters(tenant="acme", created_after=datetime(2026, 1, 1, tzinfo=timezone.utc)),
    listing.ListFilters(tenant="acme", created_before=datetime(2026, 1, 1, tzinfo=timezone.utc)),
])
def test_a_cursor_is_only_valid_for_its_own_query(other: listing.ListFilters) -> None:
    cursor = listing.encode_cursor(position(), FILTERS)
    with pytest.raises(ServiceError) as caught:
        listing.decode_cursor(cursor, other)
    assert caught.value.code is ErrorCode.BAD_REQUEST


def test_every_single_bit_flip_and_truncation_is_refused() -> None:
    cursor = listing.encode_cursor(position(), FILTERS)
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    damaged = [cursor[:n] for n in range(len(cursor))] + [cursor + "A", "é" + cursor, "A" * 101]
    for index in range(len(raw)):
        for bit in range(8):
            flipped = raw[:index] + bytes([raw[index] ^ (1 << bit)]) + raw[index + 1:]
            damaged.append(base64.urlsafe_b64encode(flipped).rstrip(b"=").decode())
    for value in damaged:
        with pytest.raises(ServiceError) as caught:
            listing.decode_cursor(value, FILTERS)
        assert caught.value.code is ErrorCode.BAD_REQUEST, value


@pytest.mark.parametrize("text, expected", [
    ("2026-11-30T06:00:00Z", datetime(2026, 11, 30, 6, tzinfo=timezone.utc)),
    ("2026-11-30t06:00:00z", datetime(2026, 11, 30, 6, tzinfo=timezone.utc)),
    ("2026-11-30 08:00:00+02:00", datetime(2026, 11, 30, 6, tzinfo=timezone.utc)),
    ("2026-11-30T06:00:00.5-00:30", datetime(2026, 11, 30, 6, 30, 0, 500000, tzinfo=timezone.utc)),
    ("2026-11-30T06:00:00.123456789Z", datetime(2026, 11, 30, 6, 0, 0, 123456, tzinfo=timezone.utc)),
])
def test_rfc3339_timestamps_parse_to_utc(text: str, expected: datetime) -> None:
    assert listing.parse_timestamp(text, "created_after") == expected


@pytest.mark.parametrize("text", [
    "2026-11-30", "2026-11-30T06:00:00", "2026-11-30T06:00Z", "2026-13-01T00:00:00Z", "2026-11-30T06:00:00+0200",
    "9999-12-31T23:59:59-01:00", "0000-01-01T00:00:00Z", "1700000000", "2026-11-30T06:00:00Z ", "",
])
def test_other_timestamps_are_validation_failures(text: str) -> None:
    with pytest.raises(ServiceError) as caught:
        listing.parse_timestamp(text, "created_before")
    assert caught.value.code is ErrorCode.VALIDATION_FAILED
    assert caught.value.details[0]["loc"] == ["query", "created_before"]


def test_page_sizes() -> None:
    assert listing.check_page_size(1) == 1 and listing.check_page_size(200) == 200
    for bad in (0, -1, 201):
        with pytest.raises(ServiceError):
            listing.check_page_size(bad)
