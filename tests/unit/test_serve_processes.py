"""``serve``'s process count and its multiprocess metrics directory (upload_service/server.py,
upload_service/metrics.py); the counting across real processes is in
tests/integration/test_metrics_multiprocess.py."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from upload_service.cli import build_parser
from upload_service.metrics import MULTIPROCESS_ENV, multiprocess_metrics_dir
from upload_service.server import cgroup_cpu_limit, default_worker_count, worker_count
from upload_service.settings import Settings


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_cpu_limits(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path) is None  # no cgroup files: no limit
    write(tmp_path / "v2" / "cpu.max", "150000 100000\n")
    assert cgroup_cpu_limit(tmp_path / "v2") == 1.5
    write(tmp_path / "v2max" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(tmp_path / "v2max") is None
    write(tmp_path / "v1" / "cpu" / "cpu.cfs_quota_us", "200000\n")
    write(tmp_path / "v1" / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(tmp_path / "v1") == 2.0
    write(tmp_path / "v1" / "cpu" / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_limit(tmp_path / "v1") is None


def test_one_process_per_usable_core_unless_told() -> None:
    cores = default_worker_count()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    assert worker_count(None, Settings()) == cores
    assert worker_count(None, Settings(server={"workers": 3})) == 3
    assert worker_count(1, Settings(server={"workers": 3})) == 1


@pytest.mark.parametrize("given", ["0", "-2", "two"])
def test_serve_refuses_a_worker_count_below_one(given: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--workers", given])


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_metrics_dir_is_private_fresh_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv(MULTIPROCESS_ENV, "/somewhere/else")
    orphan = tmp_path / f"upload-service-metrics-{dead_pid()}-x1"  # a killed serve's
    running = tmp_path / f"upload-service-metrics-{os.getpid()}-x2"  # a running serve's
    unrelated = tmp_path / "upload-service-metrics-notapid"
    for directory in (orphan, running, unrelated):
        directory.mkdir()
        (directory / "counter_1.db").write_bytes(b"\0" * 8)
    with multiprocess_metrics_dir() as path:
        assert os.environ[MULTIPROCESS_ENV] == str(path)
        assert path.parent == tmp_path and list(path.iterdir()) == []
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        (path / "counter_2.db").write_bytes(b"\0" * 8)
    assert not path.exists()
    assert os.environ[MULTIPROCESS_ENV] == "/somewhere/else"
    assert not orphan.exists() and running.exists() and unrelated.exists()


def test_a_worker_that_cannot_start_stops_serve_with_an_error(tmp_path: Path) -> None:
    """Both worker processes fail in their lifespan (the spool dir is a file): serve exits 3
    instead of restarting them forever, and leaves no metrics directory behind."""
    (tmp_path / "spool").write_text("not a directory")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("UPLOAD_")},
        "TMPDIR": str(tmp_path),
        "UPLOAD_SPOOL__DIR": str(tmp_path / "spool"),
        "UPLOAD_DATABASE__URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "UPLOAD_AUDIT__JOURNAL_PATH": str(tmp_path / "journal" / "audit.jsonl"),
        "UPLOAD_TOKENS__SECRETS": '{"k": "%s"}' % secrets.token_urlsafe(32),
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "upload_service", "serve", "--workers", "2", "--uds", str(tmp_path / "api.sock")],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 3, done.stderr[-2000:]
    assert time.monotonic() - started < 60
    assert not list(tmp_path.glob("upload-service-metrics-*"))
    assert not (tmp_path / "api.sock").exists()
