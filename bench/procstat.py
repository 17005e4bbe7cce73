"""CPU time of the processes a benchmark drives, from ``/proc`` (Linux only).

A ``Meter`` is read before and after a run; its ``delta`` is the CPU seconds (user + system) its
processes spent in between. Two kinds:

- ``TreeMeter``: a process and all its descendants (an API's supervisor and its workers, nginx's
  master and workers, SeaweedFS, redis-server). Each live process counts ``utime + stime`` plus
  ``cutime + cstime`` (children it already reaped), so a worker that exited during the run is
  still counted once, by its parent.
- ``PostgresMeter``: the server backends connected to one database, followed while the run
  lasts (a connection pool opens and closes connections during the run), and the whole server's
  process tree beside it. Other databases' backends and PostgreSQL's shared processes (WAL
  writer, checkpointer) are not in the first figure: the machine's server is shared.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Protocol

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # gone


def cpu_seconds(pid: int, with_reaped_children: bool = True) -> float:
    """``utime + stime`` (and ``cutime + cstime``) of one process; 0 once it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _CLK_TCK


def _busy_and_total_ticks() -> tuple[int, int]:
    """The machine's CPU ticks (all cores) spent busy, and in all, since boot (``/proc/stat``)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def wait_for_quiet(limit_seconds: float = 2.0, window: float = 0.1, busy_below: float = 0.15) -> float:
    """Wait until the machine's cores were less than ``busy_below`` busy over one ``window``
    (the leftover work of the previous run, such as the S3 server's own after a 45 MiB object,
    is done), for at most ``limit_seconds``; returns the seconds waited."""
    started = time.perf_counter()
    busy, total = _busy_and_total_ticks()
    while time.perf_counter() - started < limit_seconds:
        time.sleep(window)
        busy_now, total_now = _busy_and_total_ticks()
        if total_now > total and (busy_now - busy) / (total_now - total) < busy_below:
            break
        busy, total = busy_now, total_now
    return time.perf_counter() - started


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                queue += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


class Meter(Protocol):
    def start(self) -> None: ...

    def stop(self) -> float:
        """CPU seconds since ``start``."""
        ...


class TreeMeter:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._before = 0.0

    def read(self) -> float:
        return sum(cpu_seconds(pid) for pid in descendants(self.pid))

    def start(self) -> None:
        self._before = self.read()

    def stop(self) -> float:
        return max(0.0, self.read() - self._before)


class ProcessMeter:
    """This (the bench's) process: for the S3 limit, whose client is boto3 in this process."""

    def __init__(self) -> None:
        self._before = 0.0

    def start(self) -> None:
        self._before = time.process_time()

    def stop(self) -> float:
        return time.process_time() - self._before


class PostgresMeter:
    """The backends of one database, followed through ``/proc`` while the run lasts.

    Every 20 ms the postmaster's children are listed and each new one's command line read
    (``postgres: [CLUSTER:] USER DATABASE HOST(PORT) STATE``): those of our database are followed, their
    CPU counted from zero when they started during the run. A backend that starts and exits
    between two samples is missed, so ``backends_started`` is reported beside the figure.
    ``server`` meters the whole PostgreSQL process tree (reaped backends included) over the
    same run: exact, but it also counts whatever else the shared server did meanwhile.
    """

    interval = 0.02

    def __init__(self, url: str) -> None:
        import psycopg

        self.database = url.rsplit("/", 1)[1].split("?")[0]
        with psycopg.connect(url, autocommit=True) as connection:
            backend = int(connection.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
            fields = _stat_fields(backend)
            assert fields is not None, "the PostgreSQL server runs on another machine"
            self.postmaster = int(fields[1])
        self.server = TreeMeter(self.postmaster)
        self.backends_started = 0
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._others: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _ours(self) -> list[int]:
        found = []
        for pid in descendants(self.postmaster)[1:]:
            if pid in self._others:
                continue
            if pid not in self._last:
                try:
                    words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
                except OSError:
                    continue
                if not words or words[0] != b"postgres:":
                    continue  # just forked: its title (with the database) is not set yet
                if self.database.encode() not in words[1:4]:  # [cluster:] user database
                    self._others.add(pid)
                    continue
            found.append(pid)
        return found

    def _sample(self, starting: bool = False) -> None:
        for pid in self._ours():
            seconds = cpu_seconds(pid, with_reaped_children=False)
            if pid not in self._first:
                self._first[pid] = seconds if starting else 0.0
                self.backends_started += 0 if starting else 1
            self._last[pid] = max(seconds, self._last.get(pid, 0.0))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> None:
        self._first, self._last, self._others, self.backends_started = {}, {}, set(), 0
        self.server.start()
        self._sample(starting=True)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="pg-meter", daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self.server_seconds = self.server.stop()
        return sum(max(0.0, self._last[pid] - self._first[pid]) for pid in self._last)

    def close(self) -> None:
        self._stop.set()
