"""A private nginx in front of the API, rendered from the app's own settings.

The config comes from ``upload_service.nginxconf`` (the one template), written into a prefix
directory that also holds nginx's pid file, logs and temp files, so nothing touches /etc or
/var and parallel runs never collide. nginx runs in the foreground (``daemon off;`` is in the
template) as a ``ManagedProcess``.

When we run as root, nginx's master runs as root (it binds the port and opens the logs) but its
workers, the processes that parse what clients send, run as ``nobody`` (``user nobody
nogroup;``). A worker can't enter our 0700 work directories, so what a worker touches lives in
small directories under the system temp dir, made for it: its temp files (request bodies it
buffers) in one it owns, made before each start and removed after each stop; the API's unix
socket (``make run``) in one owned by root that only the worker group may enter
(``worker_dir``). Run as another user, nginx's workers keep that user and everything stays in
the work directory.
"""

from __future__ import annotations

import contextlib
import grp
import http.client
import os
import pwd
import secrets
import shutil
import ssl
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from upload_service.devstack.process import ManagedProcess
from upload_service.nginxconf import find_nginx, render_nginx_config
from upload_service.settings import Settings


#: The account nginx's workers run as when the master runs as root.
WORKER_USER = "nobody"


@dataclass(frozen=True)
class WorkerAccount:
    """The unprivileged account of nginx's workers: ``user`` and its primary ``group``."""

    user: str
    group: str
    uid: int
    gid: int

    @property
    def directive(self) -> str:
        """The value of nginx's ``user`` directive."""
        return f"{self.user} {self.group}"


def worker_account() -> WorkerAccount | None:
    """``nobody`` and its group when we run as root (nginx would run workers as root only if
    told so); None otherwise: the workers then keep our own unprivileged user."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(WORKER_USER)
    return WorkerAccount(WORKER_USER, grp.getgrgid(entry.pw_gid).gr_name, entry.pw_uid, entry.pw_gid)


def worker_dir(name: str, account: WorkerAccount) -> Path:
    """A fresh ``$TMPDIR/upload-NAME-RANDOM``, ours, that only the worker group may enter (0750).

    For the API's unix socket: nginx's workers may connect to it but not replace it; nothing
    else on the machine may enter. Remove it with ``remove_dir``.
    """
    path = Path(tempfile.mkdtemp(prefix=f"upload-{name}-"))  # 0700, ours, a name nobody guessed
    os.chown(path, os.geteuid(), account.gid)
    os.chmod(path, 0o750)
    return path


def remove_dir(path: Path) -> None:
    """Remove a directory made for the workers (never following a symlink put in its place)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path, ignore_errors=True)


def nginx_url(settings: Settings) -> str:
    """The URL clients use for this listener (a wildcard listen is reached over loopback)."""
    n = settings.nginx
    host = "127.0.0.1" if n.listen_host in ("0.0.0.0", "*") else n.listen_host
    scheme = "https" if n.tls_certificate is not None else "http"
    return f"{scheme}://{host}:{n.listen_port}"


def nginx_process(workdir: Path, settings: Settings, *, nginx: str | None = None) -> tuple[ManagedProcess, str]:
    """A not-yet-started nginx with its prefix in ``workdir``, and the URL it answers on.

    Ready means: the listener answers HTTP. The probe asks for ``/metrics``, which the public
    listener always refuses by itself (404): so it neither needs the API nor spends a token of
    the ``limit_req`` zones a test or a client is about to use.
    """
    prefix = Path(workdir).resolve()
    for directory in (prefix, prefix / "logs", prefix / "temp"):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    account = worker_account()
    # Where the workers write the request bodies they buffer: a fresh directory of theirs for
    # each start (its name is fixed now, since the config names it), removed after each stop.
    temp_dir: Path | None = None
    if account is not None:
        temp_dir = Path(tempfile.gettempdir()) / f"upload-nginx-{secrets.token_hex(8)}"

    def make_temp_dir() -> None:
        if temp_dir is not None and account is not None:
            remove_dir(temp_dir)
            os.mkdir(temp_dir, 0o700)  # fails if something else took the name meanwhile
            os.mkdir(temp_dir / "temp", 0o700)  # nginx makes only the last part of a temp path
            for directory in (temp_dir / "temp", temp_dir):
                os.chown(directory, account.uid, account.gid)

    def remove_temp_dir() -> None:
        if temp_dir is not None:
            remove_dir(temp_dir)

    config = prefix / "nginx.conf"
    user = account.directive if account is not None else None
    config.write_text(render_nginx_config(settings, prefix, user=user, temp_dir=temp_dir))
    config.chmod(0o600)
    url = nginx_url(settings)
    n = settings.nginx
    host = "127.0.0.1" if n.listen_host in ("0.0.0.0", "*") else n.listen_host.strip("[]")
    tls = n.tls_certificate is not None

    def ready() -> bool:
        connection: http.client.HTTPConnection
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # a probe of our own listener, not a trust decision
            connection = http.client.HTTPSConnection(host, n.listen_port, timeout=1.0, context=context)
        else:
            connection = http.client.HTTPConnection(host, n.listen_port, timeout=1.0)
        try:
            connection.request("GET", "/metrics", headers={"X-Request-ID": "devstack-nginx-readiness"})
            return connection.getresponse().status > 0
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    process = ManagedProcess(
        "nginx",
        [nginx or find_nginx(), "-p", f"{prefix}/", "-c", str(config), "-e", str(prefix / "logs" / "error.log")],
        # nginx's stderr and its error_log share one file, so a failed start shows both.
        log_path=prefix / "logs" / "error.log",
        ready=ready,
        env={"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"},
        cwd=prefix,
        pid_path=prefix / "nginx.pid",
        before_start=make_temp_dir,
        after_stop=remove_temp_dir,
    )
    return process, url
