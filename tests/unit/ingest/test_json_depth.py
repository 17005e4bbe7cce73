"""The JSON depth bound: a linear scan of the raw bytes, before any recursive decoder runs."""

from __future__ import annotations

import json
import time

import pytest

from upload_service.errors import ErrorCode, ServiceError
from upload_service.ingest.jsondepth import check_json_depth, json_depth, load_json


@pytest.mark.parametrize(
    "text,depth",
    [
        ("1", 0),
        ('"[[[["', 0),  # brackets inside strings don't count
        ('{"a": "\\"[[[", "b": [1, {"c": []}]}', 4),
        ("[" + ",".join(["[]"] * 100) + "]", 2),
        ("[" * 40 + "]" * 40, 40),
        ('{"k": "\\\\"}', 1),  # an escaped backslash ends before the quote
    ],
)
def test_depth_of_valid_documents(text: str, depth: int) -> None:
    assert json_depth(text.encode()) == depth
    json.loads(text)  # the samples are real JSON


@pytest.mark.parametrize("shape", ["[", "{\"a\":", "[{\"a\":", " [ "])
@pytest.mark.parametrize("levels", [33, 5000, 100_000])
def test_deep_nesting_is_refused_without_recursion(shape: str, levels: int) -> None:
    with pytest.raises(ServiceError) as refused:
        load_json((shape * levels).encode(), 32, field="metadata")
    assert refused.value.code is ErrorCode.VALIDATION_FAILED
    assert refused.value.details[0]["type"] == "json_depth"


def test_the_bound_itself_is_accepted() -> None:
    assert load_json(("[" * 32 + "]" * 32).encode(), 32, field="metadata") is not None


@pytest.mark.parametrize("raw", [b'"' + b'\\"' * 50_000, b'["' + b"\\" * 100_001, b"\xff\xfe[", b"[1,]", b"{"])
def test_invalid_json_is_a_validation_error_in_linear_time(raw: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(ServiceError) as refused:
        load_json(raw, 32, field="metadata")
    assert refused.value.code is ErrorCode.VALIDATION_FAILED
    assert time.perf_counter() - started < 0.5


def test_a_mebibyte_of_flat_brackets_scans_quickly() -> None:
    raw = b"[" + b"[]," * 349_000 + b"[]]"
    started = time.perf_counter()
    check_json_depth(raw, 32, "body")
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, elapsed
