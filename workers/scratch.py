"""Per-job scratch directories that a killed work-horse cannot leave behind for good.

A job's original and artifacts live in ``<base>/job-<pid>-<random>/`` while it runs and are
removed when it ends. A work-horse killed mid-job (OOM killer, RQ's timeout, a deploy) never
runs that cleanup, so every job first sweeps the base directory: an entry whose owner process is
gone, or that is older than any job can live, is removed. One stale directory per kill is thus
gone by the next job on the machine instead of filling the disk over weeks.

The base must be private to one machine (or container): owners are recognized by process id.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from upload_service.pids import pid_alive

log = logging.getLogger("workers.scratch")

_ENTRY = re.compile(r"^job-(\d+)-")
DEFAULT_BASE_NAME = "upload-service-scratch"


def scratch_base(configured: Path | None) -> Path:
    """The configured base directory, or ``upload-service-scratch`` in the system temp dir."""
    return configured if configured is not None else Path(tempfile.gettempdir()) / DEFAULT_BASE_NAME


@contextlib.contextmanager
def job_scratch(base: Path, stale_after_seconds: float) -> Iterator[Path]:
    """A fresh private directory for one job, after sweeping what dead jobs left in ``base``."""
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    sweep_stale(base, stale_after_seconds)
    path = Path(tempfile.mkdtemp(prefix=f"job-{os.getpid()}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep_stale(base: Path, stale_after_seconds: float) -> list[Path]:
    """Remove job directories whose owner process is dead or that outlived any job; returns them.

    Entries not named like a job directory are left alone.
    """
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(base.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = _ENTRY.match(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            age = now - entry.stat().st_mtime
        except FileNotFoundError:
            continue  # its owner just removed it
        if pid == os.getpid() or (pid_alive(pid) and age <= stale_after_seconds):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    if removed:
        log.warning("removed %d scratch directories left by killed jobs", len(removed))
    return removed
