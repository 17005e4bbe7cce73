"""The lean S3 requests of the accept path, without a server: the URL is the one boto3 uses for
each addressing style, the ``aws-chunked`` framing has the length it declares, and a part's
checksum is CRC32C however its bytes are fed (the parts' plan: tests/unit/storage/test_s3_parts.py)."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from pydantic import SecretStr

from upload_service.settings import MiB, StorageSettings
from upload_service.storage.s3 import S3ObjectStore
from upload_service.storage.s3_direct import CHUNK_BYTES, PartChecksum, chunked_length, part_checksum
from upload_service.storage.s3_errors import checksum_text


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
    framed += b"0\r\nx-amz-checksum-crc32c:" + checksum_text(part_checksum(data)).encode() + b"\r\n\r\n"
    assert chunked_length(size) == len(framed)


def test_a_part_checksum_is_crc32c_fed_in_any_pieces() -> None:
    # RFC 3720's check value for "123456789" is 0xE3069283.
    assert part_checksum(b"123456789") == bytes.fromhex("e3069283")
    data = os.urandom(3 * CHUNK_BYTES + 17)
    fed = PartChecksum()
    for start in range(0, len(data), 100_000):
        fed.update(memoryview(data)[start : start + 100_000])
    assert fed.digest() == part_checksum(data) == PartChecksum(data).digest()
    assert checksum_text(part_checksum(b"123456789")) == base64.b64encode(bytes.fromhex("e3069283")).decode()
