"""A spool file that exists under its final name only once it is complete and accepted.

Written under a temporary name (``.part-<random>``, mode 0600, created exclusively), then
``commit()`` flushes, fsyncs, renames atomically and fsyncs the directory. Leaving the context
without committing — a rejection, a disconnect, any exception — deletes the temporary file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from types import TracebackType

from upload_service.durable import fsync_dir

TEMP_PREFIX = ".part-"


class SpoolFile:
    def __init__(self, spool_dir: Path) -> None:
        self.dir = spool_dir
        self.temp_path = spool_dir / f"{TEMP_PREFIX}{secrets.token_hex(16)}"
        fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
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


def remove_stale_parts(spool_dir: Path) -> int:
    """Delete temporary files a crashed process left behind (run at start-up)."""
    removed = 0
    for path in spool_dir.glob(f"{TEMP_PREFIX}*"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
