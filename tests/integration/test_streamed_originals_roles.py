"""The API's own S3 role (docker-compose.yml's identities, enforced by SeaweedFS) may stream an
original as a multipart upload and abort one; a worker may not start one on the originals."""

from __future__ import annotations

import hashlib
import os
import secrets
import time

import pytest

from tests.integration.test_s3_roles import ORIGINALS, _refused, roles  # noqa: F401 (the fixture)
from upload_service.storage import keys
from upload_service.storage.s3 import S3ObjectStore

pytestmark = pytest.mark.slow
MiB = 1024 * 1024


def _stream(store: S3ObjectStore, key: str, data: bytes) -> S3ObjectStore:
    writer = store.open_writer(ORIGINALS, key, content_type="application/pdf")
    for start in range(0, len(data), 256 * 1024):
        writer.write(data[start : start + 256 * 1024])
        writer.wait()
    writer.commit(hashlib.sha256(data).hexdigest())
    return store


def test_the_api_role_streams_and_aborts_multipart_originals(roles: dict[str, S3ObjectStore]) -> None:  # noqa: F811
    api, worker, admin = roles["api"], roles["worker"], roles["admin"]
    key = keys.original_key("tenant-a", secrets.token_hex(8))
    data = b"%PDF-1.4\n" + os.urandom(17 * MiB)  # three parts of the default 8 MiB
    _stream(api, key, data)
    assert worker.get_bytes(ORIGINALS, key) == data

    gone = keys.original_key("tenant-a", secrets.token_hex(8))
    writer = api.open_writer(ORIGINALS, gone, content_type="application/pdf")
    writer.write(os.urandom(12 * MiB))
    deadline = time.monotonic() + 10  # the part goes out from a thread
    while not admin._client.list_multipart_uploads(Bucket=ORIGINALS).get("Uploads", []):
        assert time.monotonic() < deadline, "no multipart upload was started"
        time.sleep(0.05)
    writer.abort()
    assert admin._client.list_multipart_uploads(Bucket=ORIGINALS).get("Uploads", []) == []
    assert not admin.exists(ORIGINALS, gone)

    refused = keys.original_key("tenant-a", secrets.token_hex(8))
    assert _refused(lambda: _stream(worker, refused, os.urandom(9 * MiB)))
    assert admin._client.list_multipart_uploads(Bucket=ORIGINALS).get("Uploads", []) == []
    api.delete(ORIGINALS, key)
