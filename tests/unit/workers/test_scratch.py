"""Per-job scratch directories: removed when the job ends, swept when a killed job left them."""

from __future__ import annotations

import os
import time
from pathlib import Path

from workers.scratch import job_scratch, sweep_stale


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_a_job_directory_is_private_and_gone_after_the_job(tmp_path: Path) -> None:
    base = tmp_path / "scratch"
    with job_scratch(base, stale_after_seconds=300) as path:
        (path / "original").write_bytes(b"x")
        assert path.parent == base and path.name.startswith(f"job-{os.getpid()}-")
        assert base.stat().st_mode & 0o777 == 0o700 and path.stat().st_mode & 0o777 == 0o700
    assert list(base.iterdir()) == []


def test_the_next_job_sweeps_what_dead_or_overdue_jobs_left(tmp_path: Path) -> None:
    base = tmp_path / "scratch"
    base.mkdir()
    dead = base / f"job-{_dead_pid()}-abc"
    live = base / f"job-{os.getppid()}-def"  # a live process: pytest's parent
    overdue = base / f"job-{os.getppid()}-ghi"
    other = base / "not-a-job"
    for path in (dead, live, overdue, other):
        path.mkdir()
        (path / "original").write_bytes(b"x")
    old = time.time() - 1000
    os.utime(overdue, (old, old))

    with job_scratch(base, stale_after_seconds=300) as path:
        assert sorted(p.name for p in base.iterdir()) == sorted([live.name, other.name, path.name])

    assert sweep_stale(base, stale_after_seconds=300) == []
    assert live.exists() and other.exists()
