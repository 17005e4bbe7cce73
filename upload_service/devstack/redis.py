"""A private ``redis-server`` on a unix socket inside a work directory.

No TCP port (``--port 0``), so nothing else on the machine can reach it and parallel test runs
never collide; the socket is ``0700``. Test runs keep nothing on disk (no RDB, no AOF); the local
run asks for ``persistent=True`` (append-only file) so queued jobs survive a restart.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import redis

from upload_service.devstack.process import ManagedProcess

#: sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107


def find_redis_server() -> str:
    """The ``redis-server`` on PATH, else Debian's location."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if found is None:
        raise FileNotFoundError("redis-server not found on PATH (Debian: apt-get install redis-server)")
    return found


def redis_process(
    workdir: Path, *, persistent: bool = False, redis_server: str | None = None
) -> tuple[ManagedProcess, str]:
    """A not-yet-started redis-server in ``workdir`` and its URL ``unix://{workdir}/redis.sock``."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    socket_path = workdir / "redis.sock"
    if len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH:
        raise ValueError(f"unix socket path too long ({len(str(socket_path))} > {_MAX_SOCKET_PATH}): {socket_path}")
    argv = [
        redis_server or find_redis_server(),
        "--port", "0",
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(workdir),
        "--save", "",
        "--appendonly", "yes" if persistent else "no",
        "--daemonize", "no",
        "--logfile", "",  # stdout, i.e. the ManagedProcess log file
    ]  # fmt: skip

    def ready() -> bool:
        client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()

    process = ManagedProcess(
        "redis",
        argv,
        log_path=workdir / "redis.log",
        ready=ready,
        env={"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"},
        cwd=workdir,
        pid_path=workdir / "redis.pid",
    )
    return process, f"unix://{socket_path}"
