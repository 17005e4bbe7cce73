"""The servers the ingest benchmarks talk to, all real processes on loopback in one temp dir.

- ours: the API exactly as the test fixtures start it (``tests.fixtures.app.make_settings`` and
  ``start_api``: uvicorn, one process), on a real redis-server and SeaweedFS started by the
  devstack launchers, with a SQLite DB; optionally with ``storage.backend=local`` to show the
  ingest path without the S3 upload;
- naive: ``bench/naive_app.py`` (``UploadFile`` + ``await file.read()``) under uvicorn the same way;
- nginx: nginx alone writing the request body to a file (the anchor for large-file ingest);
- front: nginx rendered from the API's own settings (``upload_service.nginxconf``, started by the
  devstack launcher), its rate and connection limits raised for the bench, in front of ours or
  of the durable template (``bench/template_app.py``), which runs under ``uvicorn --workers N``;
- databases: a SQLite file each, or a PostgreSQL database each (``bench_<random>``, created on
  the server at ``BENCH_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``,
  and dropped at the end).

Every process is a ``ManagedProcess`` (own process group) and is stopped on the way out; the temp
dir is removed last.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from tests.fixtures.app import LiveServer, make_settings, start_api
from tests.fixtures.services import RedisService, S3Service
from upload_service.db.engine import build_engine, build_sessionmaker
from upload_service.db.migrate import upgrade_to_head
from upload_service.devstack.nginx import nginx_process
from upload_service.devstack.process import ManagedProcess, free_port
from upload_service.devstack.redis import redis_process
from upload_service.devstack.seaweed import seaweed_process
from upload_service.nginxconf import find_nginx
from upload_service.settings import DatabaseSettings, NginxSettings, Settings
from upload_service.storage import build_object_store


@dataclass
class Target:
    """One server under test: where to send a raw body and a multipart one, which process to
    watch for memory, and how to remove what an upload stored (``forget(response body, bytes
    sent)``, not timed)."""

    name: str
    url: str
    raw_path: str
    multipart_path: str
    memory_pid: int
    headers: dict[str, str] = field(default_factory=dict)
    forget: Callable[[bytes, int], None] = lambda response, sent: None
    settings: Settings | None = None  # ours: what its nginx front is rendered from
    database_url: str = ""
    log_path: Path | None = None  # the server's log, whose tail goes into a failure's message

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


#: The PostgreSQL server the bench makes its databases on (``CREATE DATABASE``, dropped at the end).
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

#: nginx limits for the bench: the rendered config's rate and connection limits stay in place,
#: raised so that one client address sending many uploads at once is never refused.
BENCH_NGINX_LIMITS: dict[str, Any] = {
    "upload_rate": "100000r/s", "upload_burst": 100000, "api_rate": "100000r/s", "api_burst": 100000,
    "conn_per_client": 4096, "keepalive_requests": 100000,
}


# -- memory ---------------------------------------------------------------------------------


def proc_kib(pid: int, name: str) -> int:
    """A ``/proc/PID/status`` figure in KiB (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def reset_peak_rss(pid: int) -> int:
    """Reset the peak RSS (VmHWM) to the current RSS and return that baseline in KiB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return proc_kib(pid, "VmRSS")


def peak_growth_mib(pid: int, baseline_kib: int) -> float:
    return max(0, proc_kib(pid, "VmHWM") - baseline_kib) / 1024


# -- the stack --------------------------------------------------------------------------------


class BenchStack:
    """redis-server, SeaweedFS and a SQLite DB in a temp dir; servers started on demand."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="upload-bench-"))
        self._exit = contextlib.ExitStack()
        self.redis: RedisService | None = None
        self.s3: S3Service | None = None
        self.database_url = f"sqlite:///{self.root / 'uploads.db'}"

    def __enter__(self) -> Self:
        try:
            self._exit.callback(shutil.rmtree, self.root, ignore_errors=True)
            process, url = redis_process(self.root / "redis")
            self._start(process, timeout=10)
            self.redis = RedisService(process=process, url=url)
            access, secret = "AK" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30)
            weed, endpoint = seaweed_process(self.root / "s3", access, secret)
            self._start(weed, timeout=60)
            self.s3 = S3Service(process=weed, endpoint_url=endpoint, access_key=access, secret_key=secret)
            upgrade_to_head(DatabaseSettings(url=self.database_url))
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def database(self, kind: str, name: str) -> str:
        """A fresh migrated-or-empty database of ``kind`` (``sqlite``/``postgresql``): a file in
        the temp dir, or ``CREATE DATABASE bench_<random>_<name>`` dropped when the stack exits."""
        if kind == "sqlite":
            return f"sqlite:///{self.root / f'{name}.db'}"
        import psycopg

        database = f"bench_{uuid.uuid4().hex[:10]}_{name}"
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        self._exit.callback(_drop_database, database)
        return f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{database}"

    def _start(self, process: ManagedProcess, timeout: float) -> None:
        self._exit.callback(process.stop, timeout=5.0)  # before start(): a failed start is stopped too
        process.start(timeout=timeout)

    def _workdir(self, name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        path.chmod(0o700)
        return path

    @contextlib.contextmanager
    def ours(
        self, backend: str = "s3", *, database_url: str | None = None, workers: int = 1, **overrides: Any
    ) -> Iterator[Target]:
        """The real API (``upload-service serve --workers N``); ``backend="local"`` keeps
        originals in a directory instead of S3; ``overrides`` change settings sections."""
        assert self.redis is not None and self.s3 is not None
        workdir = self._workdir(f"api-{backend}")
        if backend == "local":
            overrides["storage"] = {"backend": "local", "local_dir": workdir / "objects"}
        database_url = database_url or self.database_url
        if database_url != self.database_url:
            upgrade_to_head(DatabaseSettings(url=database_url))
        settings = make_settings(workdir, database_url, self.redis.url, self.s3, **overrides)
        settings.prepare_dirs()
        store = build_object_store(settings.storage)
        store.ensure_buckets()  # make_settings creates the S3 buckets; a local store needs its own
        process, url = start_api(settings, workdir, workers=workers)
        engine = build_engine(settings.database)
        try:
            server = LiveServer(
                url=url, settings=settings, process=process, sessions=build_sessionmaker(engine),
                store=store, log_path=process.log_path,
            )
            client = server.client()

            def forget(response: bytes, sent: int) -> None:
                client.request("DELETE", f"/v1/uploads/{json.loads(response)['id']}").raise_for_status()

            assert process.pid is not None
            yield Target(
                name=f"ours ({backend})", url=url, raw_path="/v1/uploads?filename=big.pdf",
                multipart_path="/v1/uploads", memory_pid=process.pid, headers=client.headers, forget=forget,
                settings=settings, database_url=database_url, log_path=process.log_path,
            )
        finally:
            process.stop()
            engine.dispose()

    def flush_queue(self) -> None:
        """Jobs pile up (no worker runs): empty Redis so admission's queue-depth check never trips."""
        assert self.redis is not None
        self.redis.flush()

    @contextlib.contextmanager
    def naive(self) -> Iterator[Target]:
        """``bench.naive_app`` under uvicorn, with uvicorn's defaults (uvloop, httptools) as ours."""
        workdir = self._workdir("naive")
        store = workdir / "files"
        store.mkdir()
        process, url = _uvicorn("naive", "bench.naive_app:create_app", workdir, {"BENCH_NAIVE_DIR": str(store)})
        try:
            process.start(timeout=30)
            assert process.pid is not None
            yield Target(
                name="naive UploadFile", url=url, raw_path="/raw", multipart_path="/upload",
                memory_pid=process.pid, forget=lambda response, sent: _empty(store),
            )
        finally:
            process.stop()

    @contextlib.contextmanager
    def template(self, database_url: str, settings: Settings, workers: int) -> Iterator[Target]:
        """``bench.template_app`` under ``uvicorn --workers N`` on the same S3 server (its own
        bucket), Redis and kind of database as ours; its table is made before it starts."""
        from bench.template_app import create_schema

        assert self.redis is not None and self.s3 is not None
        workdir = self._workdir("template")
        storage = self.s3.settings()
        build_object_store(storage).ensure_buckets()
        create_schema(database_url)
        env = {
            "BENCH_TEMPLATE_BUCKET": storage.originals_bucket,
            "BENCH_TEMPLATE_S3_ENDPOINT": self.s3.endpoint_url,
            "BENCH_TEMPLATE_S3_KEY": self.s3.access_key,
            "BENCH_TEMPLATE_S3_SECRET": self.s3.secret_key,
            "BENCH_TEMPLATE_DATABASE_URL": database_url,
            "BENCH_TEMPLATE_REDIS_URL": self.redis.url,
            "BENCH_TEMPLATE_AUDIT_LOG": str(workdir / "audit.log"),
        }
        process, url = _uvicorn(
            "template", "bench.template_app:create_app", workdir, env,
            "--workers", str(workers),
            "--proxy-headers", "--forwarded-allow-ips", ",".join(settings.server.trusted_proxies),
        )
        try:
            process.start(timeout=60)
            assert process.pid is not None
            yield Target(
                name="durable template", url=url, raw_path="/v1/uploads", multipart_path="/v1/uploads",
                memory_pid=process.pid, database_url=database_url, log_path=process.log_path,
            )
        finally:
            process.stop()

    @contextlib.contextmanager
    def front(self, settings: Settings, upstream: Target) -> Iterator[Target]:
        """nginx rendered from ``settings`` (ours'), its limits raised (``BENCH_NGINX_LIMITS``),
        proxying to ``upstream``; the target keeps the upstream's paths and headers, and its
        ``memory_pid`` is nginx's master (``TreeMeter`` sums its workers)."""
        address = urlsplit(upstream.url)
        values = {
            **settings.nginx.model_dump(), **BENCH_NGINX_LIMITS,
            "listen_host": "127.0.0.1", "listen_port": free_port(), "upstreams": [f"{address.hostname}:{address.port}"],
        }
        front_settings = settings.model_copy(update={"nginx": NginxSettings(**values)})
        process, url = nginx_process(self._workdir("front"), front_settings)
        try:
            process.start(timeout=10)
            assert process.pid is not None
            yield Target(
                name=f"nginx in front of {upstream.name}", url=url, raw_path=upstream.raw_path,
                multipart_path=upstream.multipart_path, memory_pid=process.pid, headers=upstream.headers,
                database_url=upstream.database_url, log_path=upstream.log_path,
            )
        finally:
            process.stop()

    @contextlib.contextmanager
    def nginx_sink(self) -> Iterator[Target]:
        """nginx writing each request body to a file in its client body temp dir.

        ``client_body_in_file_only on`` with a bare ``return 204`` would not do: ``return`` runs
        before the body is read, so nginx reads and discards the body and writes nothing. A
        ``proxy_pass`` makes nginx read the whole body into its temp file first (request
        buffering); the body itself is not sent on (``proxy_pass_request_body off``) and the
        upstream is a ``return 204`` location of the same server. The file is checked after each
        upload and removed.
        """
        prefix = self._workdir("nginx")
        for sub in ("logs", "body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / sub).mkdir(mode=0o700)
        port = free_port()
        config = prefix / "nginx.conf"
        config.write_text(_nginx_config(prefix, port))
        url = f"http://127.0.0.1:{port}"
        process = ManagedProcess(
            "nginx-sink",
            [find_nginx(), "-p", f"{prefix}/", "-c", str(config), "-e", str(prefix / "logs" / "error.log")],
            log_path=prefix / "logs" / "error.log",
            ready=lambda: httpx.get(url + "/livez", timeout=1).status_code == 200,
            env={"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"},
            cwd=prefix,
            pid_path=prefix / "nginx.pid",
        )
        body_dir = prefix / "body"

        def forget(response: bytes, sent: int) -> None:
            written = sum(p.stat().st_size for p in body_dir.iterdir())
            if written != sent:
                raise RuntimeError(f"nginx wrote {written} bytes of a {sent}-byte body")
            _empty(body_dir)

        try:
            process.start(timeout=10)
            assert process.pid is not None
            worker = _only_child(process.pid)
            yield Target(
                name="nginx to disk", url=url, raw_path="/upload", multipart_path="/upload",
                memory_pid=worker, forget=forget,
            )
        finally:
            process.stop()


def _drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_reachable() -> str | None:
    """None when the bench's PostgreSQL server answers, else why not."""
    try:
        import psycopg

        psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "not here"
        return f"no PostgreSQL at {POSTGRES_ADMIN_URL.split('@')[-1]}: {exc}"
    return None


def _empty(directory: Path) -> None:
    for path in directory.iterdir():
        path.unlink()


def _only_child(pid: int) -> int:
    """nginx's single worker (``worker_processes 1``): the process that reads the bodies."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"expected one nginx worker, found {children}")
    return int(children[0])


def _nginx_config(prefix: Path, port: int) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp_paths = "\n".join(f"    {kind}_temp_path {prefix / kind};" for kind in ("proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""daemon off;
{user}worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'logs' / 'error.log'} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_max_body_size 0;
    client_body_temp_path {prefix / 'body'};
{temp_paths}
    server {{
        listen 127.0.0.1:{port};
        location = /upload {{
            client_body_in_file_only on;
            proxy_pass http://127.0.0.1:{port}/written;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Content-Type "";
        }}
        location = /written {{ return 204; }}
        location = /livez {{ return 200; }}
    }}
}}
"""


def _uvicorn(name: str, factory: str, workdir: Path, env: dict[str, str], *args: str) -> tuple[ManagedProcess, str]:
    """An anchor app under uvicorn on a free port (with uvicorn's defaults, uvloop and
    httptools, as ours); not started yet."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = ManagedProcess(
        name,
        [
            sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--no-server-header", *args,
        ],
        env={**os.environ, **env},
        log_path=workdir / f"{name}.log",
        ready=lambda: httpx.get(url + "/livez", timeout=1).status_code == 200,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return process, url
