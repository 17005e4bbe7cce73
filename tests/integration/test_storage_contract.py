"""One contract for every ObjectStore backend: a local directory and a real SeaweedFS S3 server.

What callers rely on: bytes, size, content type and sha256 round-trip (multipart too); a missing
key is ObjectNotFound; deletes are idempotent and prefix deletes stay inside their prefix; keys
outside the layout are refused. S3-only: presigned URLs work with plain HTTP and stop working
when tampered with or expired; bad credentials are permanent errors, a dead server a transient
one, and the same store object works again once the server is back; dropping the buckets (tests,
throw-away dev stacks) empties again what landed after its listing.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from pydantic import SecretStr

from tests.fixtures.services import S3Service
from upload_service.errors import ObjectNotFound, StorageError
from upload_service.settings import MiB, StorageSettings
from upload_service.storage import build_object_store, keys
from upload_service.storage.base import ObjectStore, StoredObject

TENANT = "acme"


@dataclass
class Backend:
    kind: str
    settings: StorageSettings
    store: ObjectStore

    @property
    def originals(self) -> str:
        return self.settings.originals_bucket

    @property
    def artifacts(self) -> str:
        return self.settings.artifacts_bucket


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        settings = StorageSettings(backend="local", local_dir=tmp_path / "objects")
    else:
        settings = request.getfixturevalue("s3_settings")
    store = build_object_store(settings)
    store.ensure_buckets()
    yield Backend(kind=request.param, settings=settings, store=store)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def head(store: ObjectStore, bucket: str, key: str) -> StoredObject:
    """``head`` is implemented by both backends but not (yet) part of the protocol."""
    return store.head(bucket, key)  # type: ignore[attr-defined, no-any-return]


def list_keys(store: ObjectStore, bucket: str, prefix: str) -> list[str]:
    """``list_keys`` is implemented by both backends but not (yet) part of the protocol."""
    return store.list_keys(bucket, prefix)  # type: ignore[attr-defined, no-any-return]


# -- round trips ----------------------------------------------------------------------------


def test_put_bytes_round_trip(backend: Backend) -> None:
    data = os.urandom(3000)
    key = keys.artifact_key(TENANT, "u1", "info.json")
    stored = backend.store.put_bytes(
        backend.artifacts, key, data, content_type="application/json", sha256=sha256_hex(data)
    )
    assert stored == StoredObject(key=key, size=3000, content_type="application/json", sha256=sha256_hex(data))
    assert backend.store.exists(backend.artifacts, key)
    assert backend.store.get_bytes(backend.artifacts, key) == data
    assert head(backend.store, backend.artifacts, key) == stored


def test_put_file_and_download(backend: Backend, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    source = tmp_path / "in.bin"
    source.write_bytes(data)
    key = keys.original_key(TENANT, "u2")
    stored = backend.store.put_file(backend.originals, key, source, content_type="image/png", sha256=sha256_hex(data))
    assert stored.size == len(data)
    target = tmp_path / "out.bin"
    backend.store.download_file(backend.originals, key, target)
    assert target.read_bytes() == data
    assert head(backend.store, backend.originals, key) == stored


def test_empty_object(backend: Backend) -> None:
    key = keys.artifact_key(TENANT, "u3", "empty.txt")
    backend.store.put_bytes(backend.artifacts, key, b"", content_type="text/plain", sha256=sha256_hex(b""))
    assert backend.store.get_bytes(backend.artifacts, key) == b""
    assert head(backend.store, backend.artifacts, key).size == 0


def test_large_object_goes_up_in_parts_and_round_trips(backend: Backend, tmp_path: Path) -> None:
    data = os.urandom(12 * MiB)  # above the 8 MiB multipart threshold
    assert len(data) > backend.settings.multipart_threshold_bytes
    source = tmp_path / "big.pdf"
    source.write_bytes(data)
    key = keys.original_key(TENANT, "big")
    backend.store.put_file(backend.originals, key, source, content_type="application/pdf", sha256=sha256_hex(data))
    target = tmp_path / "back.pdf"
    backend.store.download_file(backend.originals, key, target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sha256_hex(data)
    assert head(backend.store, backend.originals, key) == StoredObject(
        key, len(data), "application/pdf", sha256_hex(data)
    )
    if backend.kind == "s3":  # a multipart ETag ends in -<parts>
        response = httpx.get(backend.store.presign_get(backend.originals, key, ttl_seconds=60))
        assert response.headers["etag"].strip('"').endswith("-2")


def test_overwrite_replaces_bytes_and_metadata(backend: Backend) -> None:
    key = keys.artifact_key(TENANT, "u4", "thumb-256.webp")
    backend.store.put_bytes(backend.artifacts, key, b"one", content_type="image/webp", sha256=sha256_hex(b"one"))
    backend.store.put_bytes(backend.artifacts, key, b"second", content_type="image/png", sha256=sha256_hex(b"second"))
    assert backend.store.get_bytes(backend.artifacts, key) == b"second"
    assert head(backend.store, backend.artifacts, key) == StoredObject(key, 6, "image/png", sha256_hex(b"second"))


def test_buckets_are_separate(backend: Backend) -> None:
    key = keys.artifact_key(TENANT, "u5", "original")
    backend.store.put_bytes(backend.originals, key, b"x", content_type="image/png", sha256=sha256_hex(b"x"))
    assert not backend.store.exists(backend.artifacts, key)


def test_ensure_buckets_is_idempotent_and_ping_answers(backend: Backend) -> None:
    backend.store.ensure_buckets()
    backend.store.ping()


# -- missing objects and deletes ------------------------------------------------------------


def test_missing_key_is_object_not_found(backend: Backend, tmp_path: Path) -> None:
    key = keys.original_key(TENANT, "nope")
    assert not backend.store.exists(backend.originals, key)
    with pytest.raises(ObjectNotFound) as info:
        backend.store.get_bytes(backend.originals, key)
    assert info.value.key == key and info.value.transient is False
    with pytest.raises(ObjectNotFound):
        head(backend.store, backend.originals, key)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with pytest.raises(ObjectNotFound):
        backend.store.download_file(backend.originals, key, downloads / "x")
    assert list(downloads.iterdir()) == []  # no partial download left behind


def test_delete_is_idempotent(backend: Backend) -> None:
    key = keys.original_key(TENANT, "u6")
    backend.store.put_bytes(backend.originals, key, b"data", content_type="image/gif", sha256=sha256_hex(b"data"))
    backend.store.delete(backend.originals, key)
    assert not backend.store.exists(backend.originals, key)
    with pytest.raises(ObjectNotFound):
        backend.store.get_bytes(backend.originals, key)
    backend.store.delete(backend.originals, key)  # already gone: fine


def test_delete_prefix_stays_inside_its_prefix(backend: Backend) -> None:
    def put(upload_id: str, name: str) -> str:
        key = keys.artifact_key(TENANT, upload_id, name)
        backend.store.put_bytes(
            backend.artifacts, key, name.encode(), content_type="text/plain", sha256=sha256_hex(name.encode())
        )
        return key

    doomed = [put("u1", name) for name in ("a.txt", "b.txt", "manifest.json")]
    kept = [put("u10", "a.txt"), put("u1x", "a.txt")]  # share the text prefix "u1"
    other_tenant = keys.artifact_key("other", "u1", "a.txt")
    backend.store.put_bytes(backend.artifacts, other_tenant, b"o", content_type="text/plain", sha256=sha256_hex(b"o"))

    assert list_keys(backend.store, backend.artifacts, keys.upload_prefix(TENANT, "u1")) == sorted(doomed)
    assert list_keys(backend.store, backend.artifacts, f"{TENANT}/") == sorted([*doomed, *kept])
    assert backend.store.delete_prefix(backend.artifacts, keys.upload_prefix(TENANT, "u1")) == 3
    assert list_keys(backend.store, backend.artifacts, keys.upload_prefix(TENANT, "u1")) == []
    assert not any(backend.store.exists(backend.artifacts, key) for key in doomed)
    assert all(backend.store.exists(backend.artifacts, key) for key in [*kept, other_tenant])
    assert backend.store.delete_prefix(backend.artifacts, keys.upload_prefix(TENANT, "u1")) == 0


def test_delete_prefix_over_a_thousand_keys(backend: Backend) -> None:
    prefix = keys.upload_prefix(TENANT, "many")
    names = [f"k-{i:04d}" for i in range(1005)]  # more than one DeleteObjects batch

    def put(name: str) -> None:
        key = keys.artifact_key(TENANT, "many", name)
        backend.store.put_bytes(backend.artifacts, key, b"x", content_type="text/plain", sha256=sha256_hex(b"x"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, names))
    assert len(list_keys(backend.store, backend.artifacts, prefix)) == len(names)
    assert backend.store.delete_prefix(backend.artifacts, prefix) == len(names)
    assert not backend.store.exists(backend.artifacts, keys.artifact_key(TENANT, "many", names[-1]))


# -- refused keys and metadata --------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["../x", "a/../../b", "/etc/passwd", "acme/u1/..", "acme/../original", "acme/u1/a/b", "acme/u1/", "",
     "Acme/u1/original", "acme/u1/.hidden", "acme/u1/a\\b", "acme/u1/a\x00b", "acme//original"],
)  # fmt: skip
def test_keys_outside_the_layout_are_refused(backend: Backend, key: str) -> None:
    with pytest.raises(ValueError):
        backend.store.put_bytes(backend.originals, key, b"x", content_type="image/png", sha256=sha256_hex(b"x"))
    with pytest.raises(ValueError):
        backend.store.get_bytes(backend.originals, key)
    with pytest.raises(ValueError):
        backend.store.delete(backend.originals, key)


@pytest.mark.parametrize("prefix", ["", "/", "acme", "acme/u1", "../", "acme/../", "acme/u1/x/", "acme//"])
def test_unsafe_prefixes_are_refused(backend: Backend, prefix: str) -> None:
    with pytest.raises(ValueError):
        backend.store.delete_prefix(backend.artifacts, prefix)
    with pytest.raises(ValueError):
        list_keys(backend.store, backend.artifacts, prefix)


def test_key_builders_refuse_client_strings() -> None:
    assert keys.original_key("acme", "0f3a-9") == "acme/0f3a-9/original"
    assert keys.artifact_key("acme", "u1", "thumb-256.webp") == "acme/u1/thumb-256.webp"
    assert keys.upload_prefix("acme", "u1") == "acme/u1/"
    for tenant, upload_id in [("..", "u"), ("a/b", "u"), ("acme", "../x"), ("acme", ""), ("acme", "U1")]:
        with pytest.raises(ValueError):
            keys.original_key(tenant, upload_id)
    for name in ["../../b", "..", "a/b", ".env", "a..b", "x" * 65, "Thumb.webp"]:
        with pytest.raises(ValueError):
            keys.artifact_key("acme", "u1", name)


def test_bad_metadata_is_refused(backend: Backend) -> None:
    key = keys.original_key(TENANT, "meta")
    with pytest.raises(ValueError):
        backend.store.put_bytes(backend.originals, key, b"x", content_type="image/png", sha256="not-a-hash")
    with pytest.raises(ValueError):
        backend.store.put_bytes(
            backend.originals, key, b"x", content_type="text/html\r\nX-Evil: 1", sha256=sha256_hex(b"x")
        )
    assert not backend.store.exists(backend.originals, key)


# -- presigned URLs -------------------------------------------------------------------------


def _put_artifact(backend: Backend, data: bytes) -> str:
    key = keys.artifact_key(TENANT, "pre", "sanitized.png")
    backend.store.put_bytes(backend.artifacts, key, data, content_type="image/png", sha256=sha256_hex(data))
    return key


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_presigned_url_fetches_with_plain_http(backend: Backend) -> None:
    if backend.kind == "local":
        with pytest.raises(StorageError) as info:
            backend.store.presign_get(backend.artifacts, _put_artifact(backend, b"x"), ttl_seconds=60)
        assert info.value.transient is False
        return
    data = os.urandom(5000)
    url = backend.store.presign_get(backend.artifacts, _put_artifact(backend, data), ttl_seconds=60)
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-amz-meta-sha256"] == sha256_hex(data)


def test_tampered_presigned_url_is_forbidden(s3_settings: StorageSettings) -> None:
    backend = Backend("s3", s3_settings, build_object_store(s3_settings))
    url = backend.store.presign_get(backend.artifacts, _put_artifact(backend, b"secret"), ttl_seconds=60)
    signature = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    assert httpx.get(_with_query(url, **{"X-Amz-Signature": flipped})).status_code == 403
    assert httpx.get(_with_query(url, **{"X-Amz-Expires": "604800"})).status_code == 403
    other = url.replace("/sanitized.png?", "/original?")
    assert httpx.get(other).status_code == 403


def test_expired_presigned_url_stops_working(s3_settings: StorageSettings) -> None:
    backend = Backend("s3", s3_settings, build_object_store(s3_settings))
    url = backend.store.presign_get(backend.artifacts, _put_artifact(backend, b"soon gone"), ttl_seconds=1)
    time.sleep(2.1)
    assert httpx.get(url).status_code == 403


# -- failures of the S3 server --------------------------------------------------------------


@pytest.mark.parametrize("field", ["secret_access_key", "access_key_id"])
def test_wrong_credentials_are_a_permanent_error(s3_settings: StorageSettings, field: str) -> None:
    wrong = s3_settings.model_copy(update={field: SecretStr("AKWRONGWRONGWRONG0000")})
    store = build_object_store(wrong)
    key = keys.original_key(TENANT, "creds")
    for call in (
        lambda: store.put_bytes(wrong.originals_bucket, key, b"x", content_type="image/png", sha256=sha256_hex(b"x")),
        lambda: store.get_bytes(wrong.originals_bucket, key),
        store.ping,
    ):
        with pytest.raises(StorageError) as info:
            call()
        assert info.value.transient is False
        assert not isinstance(info.value, ObjectNotFound)
        assert "AKWRONG" not in str(info.value) and "WRONG" not in str(info.value)


def test_bad_sha256_is_refused_by_the_server(s3_settings: StorageSettings) -> None:
    """The sha256 we claim is checked by S3 (ChecksumSHA256), not just stored."""
    store = build_object_store(s3_settings)
    key = keys.original_key(TENANT, "digest")
    with pytest.raises(StorageError) as info:
        store.put_bytes(
            s3_settings.originals_bucket, key, b"actual", content_type="image/png", sha256=sha256_hex(b"claimed")
        )
    assert info.value.transient is False
    assert not store.exists(s3_settings.originals_bucket, key)


def test_missing_bucket_is_a_permanent_error(s3_settings: StorageSettings) -> None:
    settings = s3_settings.model_copy(update={"originals_bucket": "no-such-bucket-here"})
    store = build_object_store(settings)
    key = keys.original_key(TENANT, "nobucket")
    with pytest.raises(StorageError) as info:
        store.put_bytes(settings.originals_bucket, key, b"x", content_type="image/png", sha256=sha256_hex(b"x"))
    assert info.value.transient is False and not isinstance(info.value, ObjectNotFound)
    with pytest.raises(StorageError):
        store.ping()


def test_dropping_the_buckets_empties_again_what_landed_after_the_listing(
    s3_settings: StorageSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request the server took in before a pause may store its object only after
    ``drop_buckets`` listed the bucket (a retried PUT's first attempt): the bucket is emptied
    again rather than left behind with a ``BucketNotEmpty``. Here an object is put right after
    the first listing, through the real server."""
    store = build_object_store(s3_settings)
    bucket = s3_settings.originals_bucket
    late = keys.original_key(TENANT, "late")
    delete_listed = store._delete_listed  # type: ignore[attr-defined]
    passes: list[str] = []

    def empty_then_a_late_put(name: str, prefix: str = "") -> int:
        deleted = delete_listed(name, prefix)
        passes.append(name)
        if name == bucket and passes.count(bucket) == 1:
            store.put_bytes(bucket, late, b"late", content_type="image/png", sha256=sha256_hex(b"late"))
        return deleted

    monkeypatch.setattr(store, "_delete_listed", empty_then_a_late_put)
    store.drop_buckets()  # type: ignore[attr-defined]
    assert passes.count(bucket) == 2
    fresh = build_object_store(s3_settings)
    with pytest.raises(StorageError):  # the bucket is gone
        fresh.put_bytes(bucket, late, b"x", content_type="image/png", sha256=sha256_hex(b"x"))
    fresh.ensure_buckets()  # for the fixture's own drop


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_dead_server_is_transient_and_recovers(s3_service: S3Service, s3_settings: StorageSettings, how: str) -> None:
    settings = s3_settings.model_copy(
        update={"connect_timeout_seconds": 0.5, "read_timeout_seconds": 1.0, "max_attempts": 1}
    )
    store = build_object_store(settings)
    key = keys.original_key(TENANT, "outage")
    # Set-up with the patient settings: a busy machine must not fail the part that isn't tested.
    build_object_store(s3_settings).put_bytes(
        settings.originals_bucket, key, b"before", content_type="image/png", sha256=sha256_hex(b"before")
    )

    getattr(s3_service.process, how)()
    started = time.monotonic()
    for call in (
        lambda: store.get_bytes(settings.originals_bucket, key),
        lambda: store.put_bytes(
            settings.originals_bucket, key, b"x", content_type="image/png", sha256=sha256_hex(b"x")
        ),
        lambda: store.exists(settings.originals_bucket, key),
        store.ping,
    ):
        with pytest.raises(StorageError) as info:
            call()
        assert info.value.transient is True
    assert time.monotonic() - started < 3.0

    s3_service.ensure_running()
    assert eventually(lambda: store.get_bytes(settings.originals_bucket, key)) == b"before"  # the same store works again


def test_hung_server_is_transient_after_the_read_timeout(s3_service: S3Service, s3_settings: StorageSettings) -> None:
    settings = s3_settings.model_copy(
        update={"connect_timeout_seconds": 0.5, "read_timeout_seconds": 0.5, "max_attempts": 1}
    )
    store = build_object_store(settings)
    key = keys.original_key(TENANT, "hung")
    build_object_store(s3_settings).put_bytes(
        settings.originals_bucket, key, b"data", content_type="image/png", sha256=sha256_hex(b"data")
    )

    s3_service.process.pause()  # sockets stay open, nothing answers
    try:
        started = time.monotonic()
        with pytest.raises(StorageError) as info:
            store.get_bytes(settings.originals_bucket, key)
        assert info.value.transient is True
        assert time.monotonic() - started < 5.0
    finally:
        s3_service.process.resume()
    assert eventually(lambda: store.get_bytes(settings.originals_bucket, key)) == b"data"


def eventually(call: Callable[[], bytes], timeout: float = 15.0) -> bytes:
    """``call()`` once it stops failing transiently (a restarted server takes a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except StorageError as exc:
            if not exc.transient or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
