"""A spool file that exists under its final name only once it is complete and accepted.

Written under a temporary name (``.part-<random>``, mode 0600, created exclusively), then
``commit()`` flushes, fsyncs, renames atomically and fsyncs the directory. Leaving the context
without committing — a rejection, a disconnect, any exception — deletes the temporary file.

Several API processes share one spool (``serve --workers N``, replicas on one volume). Each
part file is held under an exclusive ``flock`` by the process writing it, for as long as it is
open; the kernel drops the lock when that process dies, however it dies. So a part nobody holds
a lock on is an orphan, and ``remove_stale_parts`` (run by each process at start) deletes only
those — never a sibling's upload in flight.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import time
from pathlib import Path
from types import TracebackType

from upload_service.durable import fsync_dir

TEMP_PREFIX = ".part-"
#: A part younger than this is left alone even when unlocked: it may be between its creation
#: and its ``flock`` (microseconds), in the process that just created it.
STALE_AFTER_SECONDS = 60.0


class SpoolFile:
    def __init__(self, spool_dir: Path) -> None:
        self.dir = spool_dir
        self.temp_path = spool_dir / f"{TEMP_PREFIX}{secrets.token_hex(16)}"
        fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "owned by a living process"
        except BaseException:
            os.close(fd)
            self.temp_path.unlink(missing_ok=True)
            raise
        self._file = os.fdopen(fd, "wb")
        self.final_path: Path | None = None

    def write(self, data: bytes | memoryview) -> None:
        self._file.write(data)

    def commit(self, name: str) -> Path:
        """Make the bytes durable and visible as ``name`` (a server-generated id)."""
        if "/" in name or name.startswith("."):
            raise ValueError("spool names are server-generated ids")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self.dir / name
        os.rename(self.temp_path, final)
        fsync_dir(self.dir)
        self.final_path = final
        return final

    def discard(self) -> None:
        """Close and delete whatever was written; safe to call twice."""
        if not self._file.closed:
            self._file.close()
        self.temp_path.unlink(missing_ok=True)

    def __enter__(self) -> SpoolFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.final_path is None:
            self.discard()


def remove_stale_parts(spool_dir: Path, *, min_age_seconds: float = STALE_AFTER_SECONDS) -> int:
    """Delete temporary files that no living process owns (run at start-up).

    A part is stale when nobody holds its ``flock`` (its writer exited or crashed) and it is at
    least ``min_age_seconds`` old. Parts of sibling processes — locked while their upload is in
    flight — are left alone. Returns how many were deleted.
    """
    removed = 0
    now = time.time()
    for path in spool_dir.glob(f"{TEMP_PREFIX}*"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue  # gone meanwhile (committed or discarded), or not a regular file of ours
        try:
            if now - os.fstat(fd).st_mtime < min_age_seconds:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a living process is writing it
            # Locked by us now: its writer is gone. Unlink while holding the lock, and only if
            # the name still points at the file we locked.
            if os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False)):
                path.unlink(missing_ok=True)
                removed += 1
        except FileNotFoundError:
            continue
        finally:
            os.close(fd)
    return removed
