"""docker-compose.yml's per-role S3 identities, enforced by the real SeaweedFS (the release the
tests pin) started with exactly the identities file compose renders.

The matrix (docs/operations.md): only ``admin`` (used by ``migrate``) creates buckets; the API
writes and deletes originals, reads artifacts (presigned URLs) and may delete them (a client's
DELETE removes everything; SeaweedFS has no delete-only permission); workers read originals
only, and write, list and delete artifacts. The API's role may stream an original as a
multipart upload and abort one; a worker may not start one on the originals.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from tests.compose import SECRETS, compose_config
from upload_service.devstack.process import ManagedProcess
from upload_service.devstack.seaweed import seaweed_process
from upload_service.errors import StorageError
from upload_service.settings import StorageSettings
from upload_service.storage import keys
from upload_service.storage.s3 import S3ObjectStore

pytestmark = pytest.mark.slow
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def roles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, S3ObjectStore]]:
    """SeaweedFS with compose's identities; one store per role, buckets made by ``admin``."""
    done = compose_config(SECRETS)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    identities = json.loads(done.stdout)["configs"]["seaweedfs-identities"]["content"]
    workdir = tmp_path_factory.mktemp("seaweedfs-roles")
    config = workdir / "identities.json"
    config.write_text(identities)
    config.chmod(0o600)
    process: ManagedProcess
    process, endpoint = seaweed_process(
        workdir / "s3", SECRETS["S3_ADMIN_ACCESS_KEY_ID"], SECRETS["S3_ADMIN_SECRET_ACCESS_KEY"], s3_config=config
    )
    process.start(timeout=30)
    try:

        def store(role: str) -> S3ObjectStore:
            return S3ObjectStore(
                StorageSettings(
                    backend="s3",
                    endpoint_url=endpoint,
                    access_key_id=SecretStr(SECRETS[f"S3_{role}_ACCESS_KEY_ID"]),
                    secret_access_key=SecretStr(SECRETS[f"S3_{role}_SECRET_ACCESS_KEY"]),
                    max_attempts=1,
                )
            )

        stores = {role.lower(): store(role) for role in ("ADMIN", "API", "WORKER")}
        stores["admin"].ensure_buckets()  # what `migrate` does
        yield stores
    finally:
        process.stop(timeout=5.0)


def _put(store: S3ObjectStore, bucket: str, key: str, data: bytes) -> None:
    store.put_bytes(bucket, key, data, content_type="application/octet-stream", sha256=hashlib.sha256(data).hexdigest())


def _refused(call: object) -> bool:
    try:
        call()  # type: ignore[operator]
    except StorageError as exc:
        return "AccessDenied" in str(exc) or "403" in str(exc)
    return False


ORIGINALS, ARTIFACTS = "upload-originals", "upload-artifacts"


def test_the_upload_flow_works_with_each_roles_own_keys(roles: dict[str, S3ObjectStore]) -> None:
    api, worker = roles["api"], roles["worker"]
    upload_id = secrets.token_hex(8)
    prefix = keys.upload_prefix("tenant-a", upload_id)
    original = secrets.token_bytes(4096)
    _put(api, ORIGINALS, keys.original_key("tenant-a", upload_id), original)  # the API accepts an upload
    assert worker.get_bytes(ORIGINALS, keys.original_key("tenant-a", upload_id)) == original  # a worker reads it
    thumb = keys.artifact_key("tenant-a", upload_id, "thumb-256.webp")
    _put(worker, ARTIFACTS, thumb, b"thumb")  # ... and stores artifacts
    url = api.presign_get(ARTIFACTS, thumb, ttl_seconds=60)  # the API presigns
    assert httpx.get(url, timeout=10).content == b"thumb"
    api.ping()
    worker.ping()
    # A worker forgets a deleted upload's artifacts; a client's DELETE (the API) removes both prefixes.
    other = secrets.token_hex(8)
    _put(worker, ARTIFACTS, keys.artifact_key("tenant-a", other, "manifest.json"), b"{}")
    assert worker.delete_prefix(ARTIFACTS, keys.upload_prefix("tenant-a", other)) == 1
    api.delete_prefix(ORIGINALS, prefix)
    api.delete_prefix(ARTIFACTS, prefix)
    assert roles["admin"].list_keys(ORIGINALS, prefix) == [] and roles["admin"].list_keys(ARTIFACTS, prefix) == []


def test_workers_read_originals_only(roles: dict[str, S3ObjectStore]) -> None:
    api, worker, admin = roles["api"], roles["worker"], roles["admin"]
    upload_id = secrets.token_hex(8)
    key = keys.original_key("tenant-b", upload_id)
    _put(api, ORIGINALS, key, b"original bytes")
    assert _refused(lambda: _put(worker, ORIGINALS, key, b"replaced"))
    assert _refused(lambda: _put(worker, ORIGINALS, keys.original_key("tenant-b", "planted"), b"planted"))
    assert _refused(lambda: worker.delete(ORIGINALS, key))
    assert _refused(lambda: worker.list_keys(ORIGINALS, "tenant-b/"))
    assert admin.get_bytes(ORIGINALS, key) == b"original bytes"
    assert admin.list_keys(ORIGINALS, "tenant-b/") == [key]


def test_only_admin_creates_or_drops_buckets(roles: dict[str, S3ObjectStore], tmp_path: Path) -> None:
    for role in ("api", "worker"):
        store = roles[role]
        client = store._client  # noqa: SLF001 - bucket-level calls the service never makes
        with pytest.raises(Exception, match="AccessDenied"):
            client.create_bucket(Bucket=f"planted-{role}")
        with pytest.raises(Exception, match="AccessDenied|BucketNotEmpty"):
            client.delete_bucket(Bucket=ARTIFACTS)
    assert {b["Name"] for b in roles["admin"]._client.list_buckets()["Buckets"]} == {ORIGINALS, ARTIFACTS}  # noqa: SLF001


def _stream(store: S3ObjectStore, key: str, data: bytes) -> S3ObjectStore:
    writer = store.open_writer(ORIGINALS, key, content_type="application/pdf")
    for start in range(0, len(data), 256 * 1024):
        writer.write(data[start : start + 256 * 1024])
        writer.wait()
    writer.commit(hashlib.sha256(data).hexdigest())
    return store


def test_the_api_role_streams_and_aborts_multipart_originals(roles: dict[str, S3ObjectStore]) -> None:
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
