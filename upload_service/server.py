"""``upload-service serve``: the API under uvicorn, in one process or several.

Several processes (``--workers N``; by default one per core this process may use) share one
listening socket and the kernel hands each connection to one of them. What keeps them correct:

- **metrics**: prometheus-client's multiprocess mode. A private directory is made here before
  the processes start (``PROMETHEUS_MULTIPROC_DIR``, inherited by each) and removed when the
  server stops; whichever process answers ``/metrics`` merges every process's files. uvicorn's
  supervisor replaces a worker that dies; the moment it is reaped its live gauges (uploads in
  flight) are dropped, while what it counted stays in the totals.
- **admission, the audit writer, the journal replayer**: each process builds its own in its
  lifespan (``container.build_services``). Admission reads the shared spool disk and queue
  depths; audit events have unique ids and the journal is replayed under a file lock by one
  process at a time, so no event is lost or stored twice.
- **logs**: worker processes are spawned, not forked, so each sets up the JSON logs itself.

With one process nothing of this is needed: the process's own registry is exact.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from upload_service.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

#: What each API process imports and calls (``factory=True``).
APP_FACTORY = "upload_service.server:worker_app"
#: uvicorn's exit code when a worker failed before serving (bad settings, port in use).
STARTUP_FAILURE = 3
_CGROUP = Path("/sys/fs/cgroup")


def default_worker_count() -> int:
    """One per core this process may run on: its CPU affinity, capped by the CPU limit of its
    cgroup (a container's ``cpus``/``resources.limits.cpu``), rounded up; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def cgroup_cpu_limit(root: Path = _CGROUP) -> float | None:
    """CPUs this container may use (cgroup v2 ``cpu.max``, or v1 CFS quota), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max": no limit
        return None
    if quota_us <= 0 or period_us <= 0:  # v1's -1: no limit
        return None
    return quota_us / period_us


def worker_count(requested: int | None, settings: Settings) -> int:
    """``--workers``, else ``server.workers``, else one per core."""
    return requested or settings.server.workers or default_worker_count()


def serve(settings: Settings, *, host: str | None, port: int | None, uds: str | None, workers: int) -> int:
    """Run the API until stopped: 0, or ``STARTUP_FAILURE`` when a process failed to start.
    The caller has checked the token and webhook keys once (``cli/serve.py``), so a bad key is
    one clear refusal rather than one per API process."""
    from upload_service.metrics import MULTIPROCESS_ENV

    options: dict[str, Any] = {
        "factory": True,
        # httptools, without uvicorn's two copies of every request body byte (httpproto.py).
        "http": "upload_service.httpproto:BodyChunksProtocol",
        "proxy_headers": True,
        "forwarded_allow_ips": ",".join(settings.server.trusted_proxies),
        "server_header": False,
        "log_config": None,
        "timeout_graceful_shutdown": 10,
    }
    if uds:
        options["uds"] = uds
    else:
        options["host"] = host or settings.server.host
        options["port"] = port or settings.server.port
    if workers == 1:
        # serve owns the variable: one inherited from the environment would put this single
        # process's values into files nobody merges.
        os.environ.pop(MULTIPROCESS_ENV, None)
        import uvicorn

        uvicorn.run(APP_FACTORY, **options)
        return 0
    return _serve_processes(options, workers)


def _serve_processes(options: dict[str, Any], workers: int) -> int:
    import uvicorn

    from upload_service.metrics import multiprocess_metrics_dir

    config = uvicorn.Config(APP_FACTORY, workers=workers, **options)
    with multiprocess_metrics_dir() as directory:
        supervisor = _supervisor(config, directory)
        try:
            supervisor.run()
        finally:
            if config.uds and os.path.exists(config.uds):
                os.remove(config.uds)
    return STARTUP_FAILURE if supervisor.startup_failed else 0


def _supervisor(config: Any, directory: Path) -> Any:
    """uvicorn's multiprocess supervisor, told to forget each worker process it reaps."""
    from uvicorn.supervisors import Multiprocess

    from upload_service.metrics import forget_process

    class Supervisor(Multiprocess):
        def __init__(self) -> None:
            super().__init__(config, sockets=[config.bind_socket()])
            self.startup_failed = False
            self._forgotten: set[int] = set()

        def keep_subprocess_alive(self) -> None:  # replaces dead or hung workers
            self._forgetting_exited(super().keep_subprocess_alive)

        def handle_signals(self) -> None:  # SIGHUP restarts all, SIGTTOU retires one
            self._forgetting_exited(super().handle_signals)

        def _forgetting_exited(self, step: Any) -> None:
            before = list(self.processes)
            try:
                step()
            finally:
                for process in {*before, *self.processes}:
                    code, pid = process.exitcode, process.pid
                    if code is None or pid is None or pid in self._forgotten:
                        continue
                    forget_process(pid, directory)
                    self._forgotten.add(pid)
                    self.startup_failed |= code == STARTUP_FAILURE

    return Supervisor()


def worker_app() -> FastAPI:
    """The app factory each API process calls (its logging is its own: spawned, not forked)."""
    from upload_service.app import app_factory
    from upload_service.logs import configure_logging

    configure_logging()
    return app_factory()
