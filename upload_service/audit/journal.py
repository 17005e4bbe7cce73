"""The durable local fallback: an append-only file of JSON lines, one event per line.

Files, next to each other (``<name>`` is the journal's file name):

- ``<name>``            live journal: ``O_APPEND``, fsync'd after every line, mode 0600
- ``<name>.replaying``  the journal claimed by a replay; removed only once every line in it is
                        in the DB or back in the live journal, so a crash mid-replay loses nothing
- ``<name>.corrupt``    lines that can't be parsed (a write torn by a crash), kept for a human
- ``<name>.lock``       flock: one append at a time, and never during the claim's rename
- ``<name>.replay.lock`` flock: one replay at a time across processes sharing the journal
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
APPEND_BATCH_LINES = 1000


class Journal:
    """Appends and claims journal lines; knows nothing of events or databases."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.replaying_path = self._sibling(".replaying")
        self.corrupt_path = self._sibling(".corrupt")
        self._append_lock_path = self._sibling(".lock")
        self._replay_lock_path = self._sibling(".replay.lock")
        self._threads = threading.Lock()

    def append(self, lines: Iterable[str]) -> None:
        """Append lines durably (fsync before returning). Raises OSError if the disk refuses.

        ``lines`` may be a lazy stream (a replay's leftovers): it is written in bounded batches,
        each under the lock, so producing the lines never holds the lock.
        """
        iterator = iter(lines)
        while batch := list(islice(iterator, APPEND_BATCH_LINES)):
            self._append_to(self.path, batch)

    def quarantine(self, lines: Iterable[str]) -> None:
        self._append_to(self.corrupt_path, lines)

    def claim(self) -> bool:
        """Rename the live journal to ``.replaying``; False if there is nothing to claim.

        Done under the append lock so no append is between its open and its fsync while the
        file changes name; later appends start a fresh journal.
        """
        with self._append_lock():
            if self.replaying_path.exists() or not self.path.exists():
                return False
            os.replace(self.path, self.replaying_path)
            _fsync_dir(self.path.parent)
            return True

    def read_claimed(self) -> Iterator[str]:
        """The claimed file's non-empty lines, streamed."""
        with open(self.replaying_path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.strip():
                    yield line.rstrip("\n")

    def release_claimed(self) -> None:
        """Forget the claimed file: call only once its lines are stored or re-appended."""
        self.replaying_path.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)

    def has_backlog(self) -> bool:
        """Cheap check (two stats) before a replay touches the database."""
        return any(_size(path) > 0 for path in (self.path, self.replaying_path))

    def backlog(self) -> int:
        """Lines waiting in the live and claimed journals (a line may briefly count twice)."""
        return sum(_count_lines(path) for path in (self.path, self.replaying_path))

    @contextmanager
    def replay_lock(self) -> Iterator[bool]:
        """Try to become the one replayer; yields False at once if another one holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        fd = os.open(self._replay_lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the flock

    def _append_to(self, path: Path, lines: Iterable[str]) -> None:
        data = "".join(line.rstrip("\n") + "\n" for line in lines).encode("utf-8")
        if not data:
            return
        with self._append_lock():
            created = not path.exists()
            # Read access only to check the last byte; writes go to the end whatever the offset.
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            try:
                os.fchmod(fd, FILE_MODE)
                if _ends_without_newline(fd):
                    data = b"\n" + data  # a crash tore the last line: don't glue ours onto it
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_dir(path.parent)

    @contextmanager
    def _append_lock(self) -> Iterator[None]:
        """Threads of this process, then processes sharing the directory, one at a time."""
        with self._threads:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            fd = os.open(self._append_lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _sibling(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)


def _ends_without_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for line in handle if line.strip())
    except FileNotFoundError:
        return 0


def _fsync_dir(directory: Path) -> None:
    """Make a create, rename or unlink durable, not only the file's bytes."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
