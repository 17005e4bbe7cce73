"""The local stack's internals are closed to other local users (the tests' and ``make run``'s
SeaweedFS and nginx come from the same launchers).

SeaweedFS: only its S3 port checks credentials by itself. Every internal HTTP port (master,
volume, filer, admin) must refuse to hand out an object, a write, or a token without the run's
JWT, and every gRPC port must refuse a client without the run's certificate — while S3 through
boto3 keeps working. nginx: the workers, which parse what clients send, are not root.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import ssl
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.fixtures.nginx import NginxFront
from tests.fixtures.services import S3Service
from upload_service.devstack.seaweed import find_weed
from upload_service.settings import StorageSettings
from upload_service.storage.s3 import S3ObjectStore

#: HTTP ports after the S3 port, in the launcher's order, and what each is.
_INTERNAL = {"master": 1, "volume": 2, "filer": 3, "admin": 4}
_GRPC_OFFSET = 10000
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS
_REFUSED = range(400, 500)  # a client error: nothing served, written or handed out


def _ports(s3: S3Service) -> dict[str, int]:
    base = int(s3.endpoint_url.rsplit(":", 1)[1])
    return {name: base + offset for name, offset in _INTERNAL.items()}


def _workdir(s3: S3Service) -> Path:
    return s3.process.log_path.parent


def _http(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _weed_shell(s3: S3Service, command: str) -> str:
    """``weed shell`` with the run's client certificate (what only the stack's owner has)."""
    tls = _workdir(s3) / "security"
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(_workdir(s3) / "tmp"),
        "WEED_GRPC_CA": str(tls / "ca.crt"),
        "WEED_GRPC_CLIENT_CERT": str(tls / "node.crt"),
        "WEED_GRPC_CLIENT_KEY": str(tls / "node.key"),
    }
    ports = _ports(s3)
    done = subprocess.run(
        [find_weed(), "shell", f"-master=127.0.0.1:{ports['master']}", f"-filer=127.0.0.1:{ports['filer']}"],
        input=command + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=_workdir(s3) / "tmp",
        check=False,
    )
    return done.stdout + done.stderr


def _grpc_answers(port: int, context: ssl.SSLContext | None) -> bool:
    """True if an HTTP/2 (gRPC) server answers our preface with its SETTINGS frame."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        sock: socket.socket = raw
        try:
            if context is not None:
                sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(_H2_PREFACE)
            head = sock.recv(9)
        except (ssl.SSLError, ConnectionError, TimeoutError):
            return False
        # A frame header: 3 bytes length, 1 byte type (0x4 = SETTINGS).
        return len(head) == 9 and head[3] == 0x4


def _tls_context(cert_dir: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we test the server's demand for OUR certificate
    context.set_alpn_protocols(["h2"])
    if cert_dir is not None:
        context.load_cert_chain(cert_dir / "node.crt", cert_dir / "node.key")
    return context


@pytest.fixture
def stored(s3_service: S3Service, s3_settings: StorageSettings) -> tuple[str, str, bytes]:
    """An object stored through S3 (boto3): (bucket, key, bytes)."""
    payload = b"TENANT-SECRET-" + uuid.uuid4().hex.encode() + os.urandom(2048)
    key = f"tenant-a/{uuid.uuid4().hex}/original"
    store = S3ObjectStore(s3_settings)
    store.put_bytes(s3_settings.originals_bucket, key, payload, content_type="application/octet-stream", sha256=hashlib.sha256(payload).hexdigest())
    return s3_settings.originals_bucket, key, payload


def test_internal_http_ports_refuse_without_the_jwt(s3_service: S3Service, s3_settings: StorageSettings, stored: tuple[str, str, bytes]) -> None:
    bucket, key, payload = stored
    # S3 through boto3 still works, with the same bytes.
    assert S3ObjectStore(s3_settings).get_bytes(bucket, key) == payload

    # The object's volume file id, asked the way only the stack's owner can (gRPC + the run's cert).
    meta = _weed_shell(s3_service, f"fs.meta.cat /buckets/{bucket}/{key}")
    fids = re.findall(r'"fileId":\s*"(\d+,[0-9a-f]+)"', meta)
    assert fids, meta
    fid = fids[0]

    ports = _ports(s3_service)
    marker = payload[:30]
    attempts = [
        # (port, method, path): every way the HTTP APIs serve or take a file or hand out a token.
        *((ports[name], "GET", f"/{fid}") for name in _INTERNAL),
        *((ports[name], "GET", f"/buckets/{bucket}/{key}") for name in _INTERNAL),
        *((ports[name], "GET", f"/buckets/{bucket}/?pretty=y") for name in _INTERNAL),
        *((ports[name], "POST", f"/buckets/{bucket}/tenant-a/planted") for name in _INTERNAL),
        *((ports[name], "PUT", f"/buckets/{bucket}/tenant-a/planted") for name in _INTERNAL),
        *((ports[name], "POST", f"/{fid}") for name in _INTERNAL),
        *((ports[name], "DELETE", f"/{fid}") for name in _INTERNAL),
        *((ports[name], "DELETE", f"/buckets/{bucket}/{key}") for name in _INTERNAL),
        (ports["master"], "GET", "/dir/assign"),
        (ports["master"], "POST", "/dir/assign"),
        (ports["master"], "GET", f"/dir/lookup?fileId={fid}"),
        (ports["master"], "GET", "/dir/status"),
        (ports["master"], "POST", "/submit"),
        (ports["master"], "GET", "/vol/grow?count=1"),
        (ports["master"], "GET", f"/col/delete?collection={bucket}"),
        (ports["volume"], "GET", "/ui/index.html"),
        (ports["volume"], "GET", "/metrics"),
        (ports["filer"], "GET", "/"),
    ]
    for port, method, path in attempts:
        body = b"planted bytes" if method in ("POST", "PUT") else None
        status, headers, answer = _http(port, method, path, body)
        assert status in _REFUSED, (port, method, path, status, answer[:200])
        assert marker not in answer, (port, method, path)
        assert "authorization" not in headers, (port, method, path)  # no JWT handed out

    # Nothing was planted or deleted: the object is intact and alone under its prefix.
    store = S3ObjectStore(s3_settings)
    assert store.get_bytes(bucket, key) == payload
    assert store.list_keys(bucket, "tenant-a/") == [key]
    # What still answers without credentials carries no object data or names.
    for port, path in ((ports["master"], "/"), (ports["master"], "/cluster/status"), (ports["volume"], "/status")):
        status, _, answer = _http(port, "GET", path)
        assert key.encode() not in answer and marker not in answer and fid.encode() not in answer, path


def test_grpc_ports_refuse_clients_without_the_runs_certificate(s3_service: S3Service, stored: tuple[str, str, bytes]) -> None:
    s3_port = int(s3_service.endpoint_url.rsplit(":", 1)[1])
    grpc_ports = [s3_port + _GRPC_OFFSET] + [port + _GRPC_OFFSET for port in _ports(s3_service).values()]
    cert_dir = _workdir(s3_service) / "security"
    for port in grpc_ports:
        assert not _grpc_answers(port, None), f"plaintext gRPC answered on {port}"
        assert not _grpc_answers(port, _tls_context(None)), f"gRPC without a client certificate answered on {port}"
    # The same probe with the run's certificate gets an answer: the refusals above are the
    # servers' demand for the certificate, not a broken probe.
    assert _grpc_answers(s3_port + 1 + _GRPC_OFFSET, _tls_context(cert_dir))


def test_seaweedfs_secrets_are_private_and_fresh(s3_service: S3Service) -> None:
    workdir = _workdir(s3_service)
    config = (workdir / "security.toml").read_text()
    keys = re.findall(r'^key = "([^"]+)"$', config, flags=re.M)
    assert len(keys) >= 4 + 7 and len(set(keys[:4])) == 4  # 4 JWT keys, all different
    assert all(len(k) >= 32 for k in keys[:4])
    assert (workdir / "security.toml").stat().st_mode & 0o777 == 0o600
    assert (workdir / "security").stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in (workdir / "security").iterdir()) == ["ca.crt", "node.crt", "node.key"]  # no CA key
    assert workdir.stat().st_mode & 0o077 == 0


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Uid:\s+(\d+)", status, flags=re.M).group(1))  # type: ignore[union-attr]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="only under root do nginx's workers change user")
def test_nginx_workers_are_not_root(front: NginxFront) -> None:
    master = front.process.pid
    assert master is not None
    workers = [pid for pid in _children(master) if b"worker process" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert workers, "nginx has no worker processes?"
    assert all(_uid(pid) != 0 for pid in workers), {pid: _uid(pid) for pid in workers}
    # ... and they still serve: a JSON body the workers buffer to their temp dir reaches the API.
    status, _, answer = _http(int(front.url.rsplit(":", 1)[1]), "GET", "/livez")
    assert status == 200, answer
    config = (front.prefix / "nginx.conf").read_text()
    temp = Path(re.search(r"client_body_temp_path (\S+);", config).group(1)).parent  # type: ignore[union-attr]
    assert temp.stat().st_uid != 0 and temp.stat().st_mode & 0o077 == 0
    assert not temp.is_relative_to(front.prefix)


def test_a_killed_seaweedfs_leaves_no_socket_in_tmp(tmp_path: Path) -> None:
    """weed's gRPC unix sockets go to /tmp whatever TMPDIR says; a kill leaves them behind
    unless the launcher removes them."""
    from upload_service.devstack.seaweed import seaweed_process

    process, endpoint = seaweed_process(tmp_path / "s3", "AK" + uuid.uuid4().hex[:10].upper(), uuid.uuid4().hex)
    base = int(endpoint.rsplit(":", 1)[1])
    process.start(timeout=30)
    try:
        pattern = re.compile(rf"^seaweedfs-\w+-grpc-({'|'.join(str(base + i + _GRPC_OFFSET) for i in range(5))})\.sock$")
        assert [p for p in Path("/tmp").iterdir() if pattern.match(p.name)], "weed made no gRPC socket in /tmp?"
    finally:
        process.kill()
    assert [p for p in Path("/tmp").iterdir() if pattern.match(p.name)] == []
