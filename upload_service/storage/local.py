"""A directory-backed ``ObjectStore`` for single-machine runs (no S3 server needed).

Layout: the bytes of ``bucket``/``key`` are the file ``root/bucket/key``; its content type and
sha256 are a JSON sidecar ``root/.meta/bucket/key.json``. The sidecar tree can't collide with
objects (``.meta`` is not a valid bucket name) and the sidecar is written last, so it is the
commit marker: an object exists once its sidecar does. Writes go to a temporary file, are
fsynced and renamed into place (``os.replace``), so a reader never sees half an object.

Keys are refused unless they have the layout of ``keys.py`` (no ``..``, no absolute paths), and
every path is also checked to resolve under ``root`` before it is touched.

Presigned URLs need an HTTP server that checks signatures: this backend raises
``StorageError(transient=False)`` from ``presign_get`` instead of handing out ``file://`` URLs,
so the artifact-URL route answers with an error rather than a link that leaks a local path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from anyio import to_thread

from upload_service.durable import fsync_dir
from upload_service.errors import ObjectNotFound, StorageError
from upload_service.storage import keys
from upload_service.storage.base import StoredObject

#: S3's bucket naming rule (the subset we need): what may become a directory under root.
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_META_DIR = ".meta"
_COPY_CHUNK = 1024 * 1024
#: OS errors that may go away by themselves (disk full, quota, I/O hiccup).
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN})

_Writer = Callable[[BinaryIO], object]

#: The threads that flush streamed originals to disk while their bodies arrive (at most one
#: flush in flight per writer; a flush waiting for a thread when its writer commits is dropped).
FLUSH_THREADS = 4
_FLUSHES = ThreadPoolExecutor(max_workers=FLUSH_THREADS, thread_name_prefix="local-flush")


class LocalObjectStore:
    """``ObjectStore`` on a local directory; safe for threads and processes on one machine."""

    def __init__(self, root: Path, *, buckets: tuple[str, str] = ("upload-originals", "upload-artifacts")) -> None:
        self._root = Path(root).expanduser().resolve()
        for bucket in buckets:
            self._check_bucket(bucket)
        self._buckets = buckets

    def __repr__(self) -> str:
        return f"LocalObjectStore(root={str(self._root)!r})"

    # -- paths ----------------------------------------------------------------------------

    @staticmethod
    def _check_bucket(bucket: str) -> str:
        if not isinstance(bucket, str) or _BUCKET_RE.fullmatch(bucket) is None or ".." in bucket:
            raise ValueError("invalid bucket name")
        return bucket

    def _under_root(self, path: Path) -> Path:
        resolved = path.resolve()
        if not resolved.is_relative_to(self._root) or resolved == self._root:
            raise ValueError("object path escapes the store root")
        return resolved

    def _data_path(self, bucket: str, key: str) -> Path:
        return self._under_root(self._root / self._check_bucket(bucket) / keys.check_key(key))

    def _meta_path(self, bucket: str, key: str) -> Path:
        return self._under_root(self._root / _META_DIR / self._check_bucket(bucket) / (keys.check_key(key) + ".json"))

    def _require_bucket(self, bucket: str) -> None:
        if not (self._root / self._check_bucket(bucket)).is_dir():
            raise StorageError(f"local bucket {bucket} does not exist", transient=False)

    # -- writes ---------------------------------------------------------------------------

    def _commit(self, bucket: str, key: str, write: _Writer, *, content_type: str, sha256: str) -> StoredObject:
        keys.check_content_type(content_type)
        keys.check_sha256(sha256)
        self._require_bucket(bucket)
        data_path, meta_path = self._data_path(bucket, key), self._meta_path(bucket, key)
        try:
            size = _atomic_write(data_path, write)
            meta = {"size": size, "content_type": content_type, "sha256": sha256}
            _atomic_write(meta_path, lambda f: f.write(json.dumps(meta).encode()))
        except OSError as exc:
            transient = exc.errno in _TRANSIENT_ERRNOS
            raise StorageError(f"local put {bucket}/{key}: {exc.strerror}", transient=transient) from exc
        return StoredObject(key=key, size=size, content_type=content_type, sha256=sha256)

    def put_file(self, bucket: str, key: str, path: Path, *, content_type: str, sha256: str) -> StoredObject:
        os.stat(path)  # a missing source is the caller's bug (FileNotFoundError), as with S3

        def write(out: BinaryIO) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, out, _COPY_CHUNK)

        return self._commit(bucket, key, write, content_type=content_type, sha256=sha256)

    def put_bytes(self, bucket: str, key: str, data: bytes, *, content_type: str, sha256: str) -> StoredObject:
        return self._commit(bucket, key, lambda out: out.write(data), content_type=content_type, sha256=sha256)

    def open_writer(
        self, bucket: str, key: str, *, content_type: str, size_hint: int | None = None
    ) -> LocalObjectWriter:
        """Spool-then-rename inside the store: the bytes go to a temporary sibling of the
        object's file as they arrive; ``commit`` fsyncs, renames and writes the sidecar. (A
        file has no parts to cut: ``size_hint`` is not needed.)"""
        keys.check_content_type(content_type)
        self._require_bucket(bucket)
        data_path, meta_path = self._data_path(bucket, key), self._meta_path(bucket, key)
        try:
            return LocalObjectWriter(bucket, key, data_path, meta_path, content_type=content_type)
        except OSError as exc:
            raise StorageError(f"local put {bucket}/{key}: {exc.strerror}", transient=exc.errno in _TRANSIENT_ERRNOS) from exc

    def abort_stale_writes(self, bucket: str, *, older_than_seconds: float) -> int:
        """Delete temporary files (``.<name>.*.tmp``) of writers older than ``older_than_seconds``."""
        root = self._root / self._check_bucket(bucket)
        removed = 0
        now = time.time()
        for path in root.rglob(".*.tmp"):
            try:
                if path.is_file() and not path.is_symlink() and now - path.stat().st_mtime >= older_than_seconds:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def delete(self, bucket: str, key: str) -> None:
        """Delete one object (the sidecar first, so it vanishes at once); missing is fine."""
        meta_path, data_path = self._meta_path(bucket, key), self._data_path(bucket, key)
        for path in (meta_path, data_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._prune(meta_path.parent, self._root / _META_DIR / bucket)
        self._prune(data_path.parent, self._root / bucket)

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        keys.check_prefix(prefix)
        meta_dir = self._under_root(self._root / _META_DIR / self._check_bucket(bucket) / prefix)
        data_dir = self._under_root(self._root / bucket / prefix)
        deleted = 0
        if meta_dir.is_dir():
            for meta in sorted(meta_dir.rglob("*.json")):
                with contextlib.suppress(FileNotFoundError):
                    meta.unlink()
                    deleted += 1
        for directory in (meta_dir, data_dir):
            shutil.rmtree(directory, ignore_errors=True)
        self._prune(meta_dir.parent, self._root / _META_DIR / bucket)
        self._prune(data_dir.parent, self._root / bucket)
        return deleted

    def _prune(self, directory: Path, stop: Path) -> None:
        """Remove empty directories from ``directory`` up to (not including) ``stop``."""
        while directory != stop and directory.is_relative_to(stop):
            try:
                directory.rmdir()
            except OSError:  # not empty, or already gone
                return
            directory = directory.parent

    # -- reads ----------------------------------------------------------------------------

    def head(self, bucket: str, key: str) -> StoredObject:
        """Size, content type and sha256 of one object (raises ObjectNotFound)."""
        try:
            meta = json.loads(self._meta_path(bucket, key).read_bytes())
            size = self._data_path(bucket, key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        return StoredObject(key=key, size=size, content_type=meta["content_type"], sha256=meta["sha256"])

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        """Every key under ``prefix`` (``{tenant}/`` or ``{tenant}/{upload_id}/``), sorted."""
        keys.check_prefix(prefix)
        meta_root = self._root / _META_DIR / self._check_bucket(bucket)
        meta_dir = self._under_root(meta_root / prefix)
        if not meta_dir.is_dir():
            return []
        return sorted(path.relative_to(meta_root).as_posix()[: -len(".json")] for path in meta_dir.rglob("*.json"))

    def exists(self, bucket: str, key: str) -> bool:
        return self._meta_path(bucket, key).is_file() and self._data_path(bucket, key).is_file()

    def get_bytes(self, bucket: str, key: str) -> bytes:
        self.head(bucket, key)
        try:
            return self._data_path(bucket, key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def download_file(self, bucket: str, key: str, path: Path) -> None:
        self.head(bucket, key)
        source = self._data_path(bucket, key)

        def write(out: BinaryIO) -> None:
            with open(source, "rb") as src:
                shutil.copyfileobj(src, out, _COPY_CHUNK)

        try:
            _atomic_write(Path(path), write)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def presign_get(self, bucket: str, key: str, *, ttl_seconds: int) -> str:
        """Always refused: only an S3 backend can hand out URLs that expire and can't be forged."""
        raise StorageError("presigned URLs need an S3 backend", transient=False)

    # -- buckets and health ---------------------------------------------------------------

    def ensure_buckets(self) -> None:
        for bucket in self._buckets:
            (self._root / bucket).mkdir(parents=True, exist_ok=True, mode=0o700)
            (self._root / _META_DIR / bucket).mkdir(parents=True, exist_ok=True, mode=0o700)

    def drop_buckets(self) -> None:
        """Delete both buckets and their objects (tests and throw-away runs only)."""
        for bucket in self._buckets:
            shutil.rmtree(self._root / bucket, ignore_errors=True)
            shutil.rmtree(self._root / _META_DIR / bucket, ignore_errors=True)

    async def aclose(self) -> None:
        """Nothing is held for the event loop."""

    def ping(self) -> None:
        """Raise StorageError unless the originals bucket directory is there and writable."""
        directory = self._root / self._buckets[0]
        if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
            raise StorageError(f"local bucket {self._buckets[0]} is missing or not writable", transient=False)


class LocalObjectWriter:
    """``ObjectWriter`` of the local backend: a temporary file beside the object, renamed into
    place (after its fsync) only by ``commit``; ``abort`` deletes it. It never sends anything
    in the background, so it is never congested.

    ``write`` goes straight to the file: unbuffered, one ``write(2)`` of the caller's buffer (no
    copy into a userspace buffer; the GIL is released meanwhile). Every ``FLUSH_BYTES`` written,
    an ``fdatasync`` of the file starts on a thread (``_FLUSHES``; none while the previous one
    runs) while the body goes on arriving, so the one ``fsync`` at commit flushes only what came
    since. What a flush costs grows with the bytes written since the last one (the disk's own
    cache is flushed too), and only the commit's share is paid after the body has arrived.

    A background flush's error is raised by the next ``write`` past it or by the commit: the
    kernel reports a failed writeback to one ``fsync`` of the file only, so no later one would."""

    #: Start flushing the file in the background each time this many more bytes are written.
    FLUSH_BYTES = 8 * 1024 * 1024

    def __init__(self, bucket: str, key: str, data_path: Path, meta_path: Path, *, content_type: str) -> None:
        self.bucket, self.key, self.content_type = bucket, key, content_type
        self._data_path, self._meta_path = data_path, meta_path
        data_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(dir=data_path.parent, prefix=f".{data_path.name}.", suffix=".tmp")
        self._tmp = Path(tmp_name)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self.size = 0
        self._flushed = 0  # bytes written when the last background flush started
        self._flush: Future[None] | None = None
        #: Background flushes started (for tests and logs).
        self.flushes = 0
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[self._file.write(view) or 0 :]
        except OSError as exc:
            raise self._error(exc) from exc
        self.size += len(data)
        if self.size - self._flushed >= self.FLUSH_BYTES and self._flush_finished():
            self._flush = _FLUSHES.submit(os.fdatasync, self._file.fileno())
            self._flushed = self.size
            self.flushes += 1

    def congested(self) -> bool:
        return False

    def wait(self) -> None:
        return None

    async def commit_async(self, sha256: str) -> StoredObject:
        """``commit`` from the event loop: its fsyncs and rename run in a thread."""
        return await to_thread.run_sync(self.commit, sha256)

    def commit(self, sha256: str) -> StoredObject:
        keys.check_sha256(sha256)
        try:
            self._settle_flush()  # its error, if any, is this commit's
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self._data_path)
            self._done = True
            fsync_dir(self._data_path.parent)
            meta = {"size": self.size, "content_type": self.content_type, "sha256": sha256}
            _atomic_write(self._meta_path, lambda f: f.write(json.dumps(meta).encode()))
        except OSError as exc:
            if self._done:  # the data file is in place without its sidecar: take it back
                with contextlib.suppress(FileNotFoundError):
                    self._data_path.unlink()
            self._done = True
            self._discard()
            raise self._error(exc) from exc
        return StoredObject(key=self.key, size=self.size, content_type=self.content_type, sha256=sha256)

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._discard()

    def _flush_finished(self) -> bool:
        """No background flush running (raises ``StorageError`` if the last one failed: no
        later ``fsync`` would report that failure again)."""
        flush = self._flush
        if flush is None:
            return True
        if not flush.done():
            return False
        self._flush = None
        try:
            flush.result()
        except OSError as exc:
            raise self._error(exc) from exc
        return True

    def _settle_flush(self) -> None:
        """Before the file is synced or closed: drop the background flush if it has not
        started, else wait for it (raising its ``OSError``)."""
        flush, self._flush = self._flush, None
        if flush is not None and not flush.cancel():
            flush.result()

    def _discard(self) -> None:
        with contextlib.suppress(OSError):  # the file is going: how its flush ended doesn't matter
            self._settle_flush()
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()

    def _error(self, exc: OSError) -> StorageError:
        return StorageError(f"local put {self.bucket}/{self.key}: {exc.strerror}", transient=exc.errno in _TRANSIENT_ERRNOS)


# -- atomic file writing ----------------------------------------------------------------


def _atomic_write(target: Path, write: _Writer) -> int:
    """Write ``target`` through a temporary sibling: write, fsync, rename, fsync the directory.

    Returns the size written. On any failure the temporary file is removed and ``target`` is
    left as it was.
    """
    for attempt in range(3):
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            break
        except FileNotFoundError:  # a concurrent delete pruned the empty directory meanwhile
            if attempt == 2:
                raise
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(target.parent)
    return size
