"""``upload-service dev`` (``make run``): the whole stack on one machine, in one command.

Why one supervisor instead of a Procfile or compose: every part is the real component (redis,
an S3 server, the API under uvicorn, one RQ worker per queue, nginx in front, and the demo
page's server on its own origin: ``upload_service.demo``), started by the
same launchers the tests use, configured from ONE ``Settings`` object built here (environment
honoured) and handed to each child as ``settings.to_env()``, so they can't disagree.

Under ``--workdir`` (default ``var/``), all private (0700 dirs, 0600 files):
``secrets.env`` (local S3 credentials, generated once, never printed), ``token-secrets`` (the
upload-token signing secret, generated once), ``dev-key`` (the dev API
key, reused while it still authenticates), ``redis/`` (append-only data), ``s3/``, ``spool/``,
``uploads.db`` (unless ``UPLOAD_DATABASE__URL`` says otherwise), ``run/`` (API socket, pid
files), ``logs/`` and ``nginx/`` (config, access and error logs). Run as root, nginx's workers
run as ``nobody`` and can't enter these: the API's socket then lives in a fresh
``$TMPDIR/upload-api-*`` directory only their group may enter, removed when the stack stops
(see ``devstack.nginx``).

Ctrl-C or SIGTERM stops everything in reverse start order; a child that dies is reported and
stops the stack (exit 1). Children run in their own sessions, so only we signal them.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from upload_service.devstack.demo import demo_origins, demo_process
from upload_service.devstack.nginx import nginx_process, remove_dir, worker_account, worker_dir
from upload_service.devstack.process import ManagedProcess, ProcessStartError, free_port
from upload_service.devstack.redis import redis_process
from upload_service.devstack.seaweed import seaweed_process
from upload_service.settings import Settings

SECRETS_FILE = "secrets.env"
DEV_KEY_FILE = "dev-key"
TOKEN_SECRETS_FILE = "token-secrets"
WEBHOOK_KEYS_FILE = "webhook-keys"
_POLL_SECONDS = 0.25


class _Stop(Exception):
    """SIGTERM, turned into an exception so start-up and supervision unwind the same way."""


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, created with that mode (no window at 0644)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def load_or_create_secrets(workdir: Path) -> dict[str, str]:
    """The local S3 credentials, generated on the first run and kept in ``secrets.env``."""
    path = workdir / SECRETS_FILE
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and not name.startswith("#"):
                values[name.strip()] = value.strip()
    if not values.get("S3_ACCESS_KEY_ID") or not values.get("S3_SECRET_ACCESS_KEY"):
        values = {"S3_ACCESS_KEY_ID": "DEV" + secrets.token_hex(8).upper(), "S3_SECRET_ACCESS_KEY": secrets.token_urlsafe(30)}
        body = "".join(f"{k}={v}\n" for k, v in values.items())
        _write_private(path, "# Local S3 credentials for `upload-service dev`; generated once.\n" + body)
    os.chmod(path, 0o600)
    return values


def ensure_token_secrets(workdir: Path) -> Path:
    """The upload-token signing secret (``tokens.secrets_file``), generated on the first run."""
    return _ensure_key_file(workdir / TOKEN_SECRETS_FILE, "Upload-token secret")


def ensure_webhook_keys(workdir: Path) -> Path:
    """The key that seals webhook signing secrets (``webhooks.secret_keys_file``), generated once."""
    return _ensure_key_file(workdir / WEBHOOK_KEYS_FILE, "Webhook secret key")


def _ensure_key_file(path: Path, what: str) -> Path:
    """A key-id secrets file (``dev=<secret>``) kept private, created with a fresh secret once."""
    if not path.exists():
        _write_private(path, f"# {what} for `upload-service dev`; generated once.\ndev={secrets.token_urlsafe(48)}\n")
    os.chmod(path, 0o600)
    return path


def build_settings(
    from_env: Settings,
    workdir: Path,
    *,
    redis_url: str,
    s3_endpoint: str,
    credentials: dict[str, str],
    api_socket: Path | None = None,
    extra_origins: Sequence[str] = (),
) -> Settings:
    """The environment's settings (``from_env``), pointed at the local services and ``workdir``.

    The database and the spool move into ``workdir`` unless the environment set them (so
    ``UPLOAD_DATABASE__URL=postgresql://...`` works). The API listens on a unix socket
    (``api_socket``, default ``run/api.sock``) in a directory that only nginx reaches; uvicorn sees no peer address on a unix socket, so
    ``trusted_proxies`` is ``*`` to let it take the client address from nginx's headers.
    ``extra_origins`` (the demo page's) are added to the environment's ``cors.allow_origins``.
    """
    values: dict[str, dict[str, object]] = {
        "redis": {"url": redis_url},
        "storage": {
            "backend": "s3",
            "endpoint_url": s3_endpoint,
            "access_key_id": credentials["S3_ACCESS_KEY_ID"],
            "secret_access_key": credentials["S3_SECRET_ACCESS_KEY"],
            "addressing_style": "path",
        },
        "server": {"trusted_proxies": ["*"]},
        "nginx": {"upstreams": [f"unix:{api_socket or workdir / 'run' / 'api.sock'}"]},
    }
    if "url" not in from_env.database.model_fields_set:
        values["database"] = {"url": f"sqlite:///{workdir / 'uploads.db'}"}
    if "dir" not in from_env.spool.model_fields_set:
        values["spool"] = {"dir": workdir / "spool"}
    if not from_env.tokens.secrets and from_env.tokens.secrets_file is None:
        values["tokens"] = {"secrets_file": workdir / TOKEN_SECRETS_FILE}
    if not from_env.webhooks.secret_keys and from_env.webhooks.secret_keys_file is None:
        # Local receivers live on localhost: the dev stack allows private destinations.
        values["webhooks"] = {"secret_keys_file": workdir / WEBHOOK_KEYS_FILE, "allow_private_destinations": True}
    port = os.environ.get("PORT")
    if port:
        values["nginx"]["listen_port"] = int(port)
    if extra_origins:
        values["cors"] = {"allow_origins": [*from_env.cors.allow_origins, *extra_origins]}
    return Settings(**values)  # type: ignore[arg-type]


def ensure_dev_key(settings: Settings, path: Path) -> str:
    """The dev API key in ``path`` if it still authenticates with its scopes, else a new one."""
    from upload_service import auth
    from upload_service.db.engine import build_engine, build_sessionmaker, session_scope
    from upload_service.errors import ServiceError

    tenant = settings.auth.dev_key_tenant
    wanted = [auth.Scope.UPLOAD, auth.Scope.READ, auth.Scope.ADMIN]
    engine = build_engine(settings.database)
    sessions = build_sessionmaker(engine)
    try:
        if path.exists():
            key = path.read_text().strip()
            try:
                with session_scope(sessions) as session:
                    principal = auth.authenticate(session, f"Bearer {key}")
                if principal.tenant == tenant and set(wanted) <= principal.scopes:
                    return key
            except ServiceError:
                pass  # revoked, or a fresh database: make a new one
        with session_scope(sessions) as session:
            new = auth.create_key(session, tenant, wanted, label="dev stack (make run)")
        _write_private(path, new.key + "\n")
        return new.key
    finally:
        engine.dispose()


def demo_port(from_env: Settings) -> int:
    """The demo page's port: ``DEMO_PORT``, else the one after nginx's when free, else any free one."""
    if os.environ.get("DEMO_PORT"):
        return int(os.environ["DEMO_PORT"])
    after = int(os.environ.get("PORT") or from_env.nginx.listen_port) + 1
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", after))
            return after
        except OSError:
            return free_port()


def _child_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.to_env()}


def api_process(settings: Settings, workdir: Path, sock_path: Path | None = None) -> ManagedProcess:
    """uvicorn on ``sock_path`` (default ``run/api.sock``); ready when ``GET /livez`` answers
    200 over the socket."""
    sock_path = sock_path or workdir / "run" / "api.sock"

    def ready() -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(sock_path))
            sock.sendall(b"GET /livez HTTP/1.0\r\nHost: api\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")

    return ManagedProcess(
        "api",
        [sys.executable, "-m", "upload_service", "serve", "--uds", str(sock_path)],
        log_path=workdir / "logs" / "api.log",
        ready=ready,
        env=_child_env(settings),
        cwd=workdir,
        pid_path=workdir / "run" / "api.pid",
    )


def worker_process(settings: Settings, workdir: Path, queue: str) -> ManagedProcess:
    """``upload-service worker --queues QUEUE``; ready when RQ lists a worker with its pid."""
    from rq import Queue, Worker

    from upload_service.jobqueue import connect

    holder: list[ManagedProcess] = []

    def ready() -> bool:
        connection = connect(settings.redis)
        try:
            workers = Worker.all(connection=connection, queue=Queue(queue, connection=connection))
            return any(w.pid == holder[0].pid for w in workers)
        finally:
            connection.close()

    process = ManagedProcess(
        f"worker-{queue}",
        [sys.executable, "-m", "upload_service", "worker", "--queues", queue],
        log_path=workdir / "logs" / f"worker-{queue}.log",
        ready=ready,
        env=_child_env(settings),
        cwd=workdir,
        pid_path=workdir / "run" / f"worker-{queue}.pid",
    )
    holder.append(process)
    return process


def _describe(exc: Exception) -> str:
    """A one-line reason. Settings errors leave out the input values: they may hold secrets."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_input=False, include_url=False)
        return "invalid settings: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return str(exc)


def _say(text: str) -> None:
    print(text, flush=True)


def _start(started: list[ManagedProcess], process: ManagedProcess, timeout: float = 30.0) -> None:
    started.append(process)  # before start(): a Ctrl-C mid-start must still stop it
    _say(f"starting {process.name} ...")
    process.start(timeout=timeout)


def _supervise(started: list[ManagedProcess]) -> int:
    """Wait until a signal (0) or a child's death (1)."""
    while True:
        for process in started:
            if not process.is_running():
                print(f"error: {process.name} exited unexpectedly; its log ({process.log_path}) ends with:", file=sys.stderr)
                print(process.log_tail(15), file=sys.stderr, flush=True)
                return 1
        time.sleep(_POLL_SECONDS)


def _run(workdir: Path, started: list[ManagedProcess], made: list[Path]) -> int:
    from_env = Settings()  # invalid settings fail here, before anything starts
    for sub in ("run", "logs"):
        (workdir / sub).mkdir(mode=0o700, exist_ok=True)
    credentials = load_or_create_secrets(workdir)
    ensure_token_secrets(workdir)
    ensure_webhook_keys(workdir)
    account = worker_account()
    api_socket = workdir / "run" / "api.sock"
    if account is not None:  # nginx's workers run as `nobody`: the socket must be theirs to reach
        made.append(worker_dir("api", account))
        api_socket = made[-1] / "api.sock"

    redis, redis_url = redis_process(workdir / "redis", persistent=True)
    _start(started, redis)
    s3, s3_endpoint = seaweed_process(workdir / "s3", credentials["S3_ACCESS_KEY_ID"], credentials["S3_SECRET_ACCESS_KEY"])
    _start(started, s3, timeout=60)

    page_port = demo_port(from_env)
    settings = build_settings(
        from_env, workdir, redis_url=redis_url, s3_endpoint=s3_endpoint, credentials=credentials, api_socket=api_socket,
        extra_origins=demo_origins(page_port),
    )
    settings.prepare_dirs()
    from upload_service.db.migrate import upgrade_to_head
    from upload_service.storage import build_object_store

    upgrade_to_head(settings.database)
    store = build_object_store(settings.storage)
    store.ensure_buckets()
    if settings.cors.allow_origins:  # pages of these origins may fetch() artifacts' presigned URLs
        store.allow_browser_gets(settings.cors.allow_origins, max_age_seconds=settings.cors.max_age)  # type: ignore[attr-defined]
    key = ensure_dev_key(settings, workdir / DEV_KEY_FILE)

    _start(started, api_process(settings, workdir, api_socket))
    for queue in (settings.queue.image_queue, settings.queue.pdf_queue):
        _start(started, worker_process(settings, workdir, queue))
    nginx, url = nginx_process(workdir / "nginx", settings)
    _start(started, nginx)
    _start(started, demo_process(workdir, port=page_port, api_url=url, key_file=workdir / DEV_KEY_FILE))

    _say(f"URL: {url}")
    _say(f"API key: {key}")
    _say(f"Try: curl -H 'Authorization: Bearer {key}' -F 'file=@picture.png' {url}/v1/uploads")
    _say(f"Demo page: http://127.0.0.1:{page_port}/ (its own origin; its backend mints an upload token per page view)")
    _say(f"Logs in {workdir / 'logs'} and {workdir / 'nginx' / 'logs'}; Ctrl-C stops everything.")
    return _supervise(started)


def run_dev_stack(args: argparse.Namespace) -> int:
    """Start the stack, supervise it, and stop it cleanly; the exit status of ``make run``."""
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, on_term)
    started: list[ManagedProcess] = []
    made: list[Path] = []
    status = 0
    try:
        status = _run(workdir, started, made)
    except (KeyboardInterrupt, _Stop):
        _say("stopping ...")
    except ProcessStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 1
    except (ValidationError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {_describe(exc)}", file=sys.stderr)
        status = 2
    finally:
        # A second Ctrl-C must not interrupt the shutdown half-way and orphan a child.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for process in reversed(started):
            process.stop(timeout=10.0)
        (workdir / "run" / "api.sock").unlink(missing_ok=True)  # uvicorn leaves its socket
        for directory in made:
            remove_dir(directory)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)
    _say("stopped")
    return status
