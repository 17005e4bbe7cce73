"""A private nginx in front of the API, rendered from the app's own settings.

The config comes from ``upload_service.nginxconf`` (the one template), written into a prefix
directory that also holds nginx's pid file, logs and temp files, so nothing touches /etc or
/var and parallel runs never collide. nginx runs in the foreground (``daemon off;`` is in the
template) as a ``ManagedProcess``; when we run as root its workers run as root too
(``user root;``), because as ``nobody`` they could not reach the API's unix socket in a 0700
directory (502, permission denied; see COMPONENTS.md).
"""

from __future__ import annotations

import http.client
import os
import ssl
from pathlib import Path

from upload_service.devstack.process import ManagedProcess
from upload_service.nginxconf import find_nginx, render_nginx_config
from upload_service.settings import Settings


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
    config = prefix / "nginx.conf"
    config.write_text(render_nginx_config(settings, prefix, user="root" if os.geteuid() == 0 else None))
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
    )
    return process, url
