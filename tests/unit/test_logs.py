"""The JSON log line: one object per record, with the fields operators search by."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime

import pytest

from upload_service.logs import JsonFormatter, current_request_id


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, out
    finally:
        logger.handlers[:] = []


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_carries_time_level_logger_message_and_the_request_id(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = log
    token = current_request_id.set("req-12345678")
    try:
        logger.info("%s - %r %d", "127.0.0.1:5000", "GET /livez", 200)
    finally:
        current_request_id.reset(token)
    logger.warning("outside a request")
    first, second = lines(out)
    assert first == {
        "ts": first["ts"], "level": "info", "logger": "tests.logs", "msg": "127.0.0.1:5000 - 'GET /livez' 200",
        "request_id": "req-12345678",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(first["ts"]))
    assert second["level"] == "warning" and "request_id" not in second


def test_extra_fields_are_kept_in_order_and_unencodable_values_become_text(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = log
    logger.info("upload:accepted", extra={"event": "audit", "size": 3, "error_code": None, "when": datetime(2026, 1, 2)})
    (line,) = lines(out)
    assert list(line)[4:] == ["event", "size", "error_code", "when"]
    assert line["size"] == 3 and line["error_code"] is None and line["when"] == "2026-01-02 00:00:00"


def test_an_exception_goes_into_the_line(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = log
    try:
        raise ValueError("bad value")
    except ValueError:
        logger.exception("failed")
    (line,) = lines(out)
    assert line["msg"] == "failed" and "ValueError: bad value" in str(line["exc"])


def test_each_line_has_its_own_time(log: tuple[logging.Logger, io.StringIO]) -> None:
    """Records of one second share the date part; records of another second do not."""
    logger, out = log
    for second, msecs in ((1_700_000_000, 1.0), (1_700_000_000, 999.0), (1_700_000_001, 500.0), (1_600_000_000, 250.0)):
        record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "tick", None, None)
        record.created, record.msecs = second + msecs / 1000, msecs
        logger.handle(record)
    assert [line["ts"] for line in lines(out)] == [
        "2023-11-14T22:13:20.001Z", "2023-11-14T22:13:20.999Z", "2023-11-14T22:13:21.500Z", "2020-09-13T12:26:40.250Z",
    ]
