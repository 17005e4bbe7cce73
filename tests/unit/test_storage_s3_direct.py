"""The lean S3 requests of the accept path, without a server: the URL is the one boto3 uses for
each addressing style, the ``aws-chunked`` framing has the length it declares, and the streamed
parts are cut so that a body of known size ends on a part boundary."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import pytest
from pydantic import SecretStr

from upload_service.settings import MiB, StorageSettings
from upload_service.storage.s3 import S3ObjectStore, S3StreamingWriter
from upload_service.storage.s3_direct import CHUNK_BYTES, chunked_length


def settings(**values: Any) -> StorageSettings:
    return StorageSettings(
        access_key_id=SecretStr("AKEXAMPLE000000"), secret_access_key=SecretStr("secret"), **values
    )


@pytest.mark.parametrize(
    ("values", "url"),
    [
        ({"endpoint_url": "http://127.0.0.1:8333", "addressing_style": "path"}, "http://127.0.0.1:8333/bkt/t/u/original"),
        (
            {"endpoint_url": "https://s3.example.com", "addressing_style": "virtual"},
            "https://bkt.s3.example.com/t/u/original",
        ),
        ({"region": "eu-west-1", "addressing_style": "virtual"}, "https://bkt.s3.eu-west-1.amazonaws.com/t/u/original"),
        ({"region": "eu-west-1", "addressing_style": "path"}, "https://s3.eu-west-1.amazonaws.com/bkt/t/u/original"),
    ],
)
def test_the_url_is_the_one_boto3_addresses(values: dict[str, Any], url: str) -> None:
    store = S3ObjectStore(settings(originals_bucket="bkt", artifacts_bucket="art", **values))
    assert store._direct.url("bkt", "t/u/original") == url


@pytest.mark.parametrize("size", [1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 5 * MiB, 5 * MiB + 12_345])
def test_the_declared_length_is_the_framed_length(size: int) -> None:
    data = os.urandom(size)
    framed = bytearray()
    for start in range(0, size, CHUNK_BYTES):
        chunk = data[start : start + CHUNK_BYTES]
        framed += b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    digest = base64.b64encode(hashlib.sha256(data).digest())
    framed += b"0\r\nx-amz-checksum-sha256:" + digest + b"\r\n\r\n"
    assert chunked_length(size) == len(framed)


def plan(size_hint: int | None, body: int, part: int = 8 * MiB) -> list[int]:
    """The sizes of the parts a body of ``body`` bytes goes up in (the first part is ``part``)."""
    writer = S3StreamingWriter(
        None, None, None, None, "b", "k", content_type="x", part_bytes=part, in_flight=2, size_hint=size_hint  # type: ignore[arg-type]
    )
    sizes, start = [part], part
    while start < body:
        declared = writer._plan_part(start)
        sizes.append(min(declared, body - start))
        start += declared
    return sizes


@pytest.mark.parametrize("body", [8 * MiB + 1, 9 * MiB, 13 * MiB, 16 * MiB + 5, 21 * MiB, 45 * MiB, 500 * MiB + 7])
@pytest.mark.parametrize("extra", [0, 700, 200 * 1024])
def test_with_a_size_hint_every_part_but_the_last_is_5_mib_and_none_is_cut_short(body: int, extra: int) -> None:
    """The hint is the size (raw body) or an upper bound (a form's request length, ``extra``
    bytes more): the parts cover the body, every part but the last is >= 5 MiB, and no part
    declared more than the body held (a part cut short would be sent again)."""
    hint = body + extra
    writer = S3StreamingWriter(
        None, None, None, None, "b", "k", content_type="x", part_bytes=8 * MiB, in_flight=2, size_hint=hint  # type: ignore[arg-type]
    )
    start, sizes = 8 * MiB, [8 * MiB]
    while start < body:
        declared = writer._plan_part(start)
        assert declared <= body - start or start + declared >= hint - 256 * 1024, (start, declared)
        sizes.append(min(declared, body - start))
        start += declared
    assert sum(sizes) == body
    assert all(size >= 5 * MiB for size in sizes[:-1]), sizes
    assert max(sizes) <= 10 * MiB


def test_without_a_hint_later_parts_are_the_smallest_s3_allows() -> None:
    """The part the body ends in is sent twice; 5 MiB parts bound how much that is."""
    assert plan(None, 45 * MiB) == [8 * MiB] + [5 * MiB] * 7 + [2 * MiB]
    assert plan(None, 45 * MiB, part=5 * MiB) == [5 * MiB] * 9
