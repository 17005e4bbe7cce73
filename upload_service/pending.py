"""Originals stored before their row commits, noted in a per-process ledger so that a crash
between the two leaves nothing behind.

The accept path stores the original first and commits its row after (the group commit). A
process killed in between (SIGKILL, OOM) leaves an object nobody was told of. So before it
commits an original, the process appends the upload id and the object's key to its own ledger
file (in a directory beside the audit journal): one ``write`` of one line, no fsync (a killed
process's writes are in the page cache and survive it; only a crash of the whole machine could
lose the line). The ledger is held under an exclusive ``flock`` for the life of the process, so
a ledger nobody holds is a dead process's. At start, every API process sweeps such ledgers:
each noted original whose row is missing is deleted from the originals bucket (a no-op where
the object never arrived), then the ledger.

Ledgers rotate: past ``ROTATE_BYTES`` new keys go to a fresh file, and a full one is removed
as soon as every upload noted in it has finished (committed or cleaned up either way).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "pending-originals-"
SUFFIX = ".log"
#: A ledger past this size takes no more keys (it is removed once its uploads have finished).
ROTATE_BYTES = 1024 * 1024

#: Given upload ids, the ones that have a row.
RecordedIds = Callable[[list[str]], set[str]]
#: Deletes one key from the originals bucket (raises on a storage fault).
DeleteKey = Callable[[str], None]


@dataclass
class _Ledger:
    path: Path
    fd: int
    size: int = 0
    open_notes: int = 0
    full: bool = False


@dataclass
class Note:
    """One noted key; ``done()`` once its upload finished (row committed, or object removed)."""

    ledger: _Ledger
    owner: PendingOriginals
    finished: bool = field(default=False)

    def done(self) -> None:
        if not self.finished:
            self.finished = True
            self.owner._finished(self.ledger)


class PendingOriginals:
    """This process's ledger; thread-safe. ``close()`` at exit (nothing pending: removed)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        self._ledger = self._open_new()

    def note(self, upload_id: str, key: str) -> Note:
        """Record the upload's original ``key`` before its object is committed to the store."""
        line = f"{upload_id} {key}\n".encode()
        with self._lock:
            if self._ledger.size >= ROTATE_BYTES:
                full, self._ledger = self._ledger, self._open_new()
                full.full = True
                _remove_if_settled(full)
            ledger = self._ledger
            os.write(ledger.fd, line)
            ledger.size += len(line)
            ledger.open_notes += 1
            return Note(ledger, self)

    def close(self) -> None:
        """At a clean exit every upload has finished and the ledger goes; a key still open
        (an upload abandoned mid-commit) keeps it for the next start's sweep."""
        with self._lock:
            ledger = self._ledger
            if ledger.open_notes == 0:
                _unlink(ledger.path)
            os.close(ledger.fd)

    def _open_new(self) -> _Ledger:
        """A new ledger, locked before it gets its final name (a sweeper globbing for ledgers
        never sees one that is not yet locked)."""
        self._directory.mkdir(parents=True, exist_ok=True)
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(6)}{SUFFIX}"
        staging = self._directory / f".{name}"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        final = self._directory / name
        os.rename(staging, final)
        return _Ledger(final, fd)

    def _finished(self, ledger: _Ledger) -> None:
        with self._lock:
            ledger.open_notes -= 1
            if ledger.full:
                _remove_if_settled(ledger)


def _remove_if_settled(ledger: _Ledger) -> None:
    """A full ledger whose uploads have all finished has nothing left to protect."""
    if ledger.open_notes == 0:
        _unlink(ledger.path)
        os.close(ledger.fd)


def sweep_dead_ledgers(directory: Path, recorded: RecordedIds, delete: DeleteKey, *, batch: int = 500) -> int:
    """Delete the originals that dead processes noted but never recorded; returns how many keys
    were removed. A ledger is removed only once all its keys are settled: a DB or S3 fault
    leaves it for the next start."""
    removed = 0
    for path in sorted(directory.glob(f"{PREFIX}*{SUFFIX}")):
        fd = _lock_if_dead(path)
        if fd is None:
            continue  # a living process holds it
        try:
            noted = _read_notes(fd)
            for chunk in _chunks(list(noted), batch):
                kept = recorded(chunk)
                for upload_id in chunk:
                    if upload_id not in kept:
                        delete(noted[upload_id])
                        removed += 1
            _unlink(path)
        except Exception:  # noqa: BLE001 - any fault: keep the ledger for the next sweep
            log.warning("could not sweep pending originals ledger %s; kept for the next start", path.name, exc_info=True)
        finally:
            os.close(fd)
    return removed


def _lock_if_dead(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None  # swept by a sibling meanwhile
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _read_notes(fd: int) -> dict[str, str]:
    """Upload id -> original key, from a ledger's complete lines."""
    chunks = []
    while block := os.read(fd, 1 << 16):
        chunks.append(block)
    # Every complete line ends with its newline; a last line without one (a write cut short)
    # is dropped: its object was never committed.
    notes: dict[str, str] = {}
    for line in b"".join(chunks).split(b"\n")[:-1]:
        upload_id, _, key = line.decode("utf-8", "replace").partition(" ")
        if upload_id and key:
            notes[upload_id] = key
    return notes


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
