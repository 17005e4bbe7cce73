"""``make run``: ``python -m upload_service dev`` as a real subprocess. The whole stack comes up
behind its nginx, processes an upload, keeps its key and data across runs, and leaves no
process or pid file behind when stopped by SIGINT or when a child dies."""

from __future__ import annotations

import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import samples
from upload_service.devstack.process import free_port

pytestmark = pytest.mark.slow
_START_TIMEOUT = 120.0


@dataclass
class DevStack:
    proc: subprocess.Popen[str]
    url: str = ""
    key: str = ""
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_banner(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while not (self.url and self.key):
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no URL/API key lines in {_START_TIMEOUT}s:\n" + "\n".join(self.lines)) from None
            if line is None:
                raise AssertionError("the stack exited while starting:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if line.startswith("URL: "):
                self.url = line.removeprefix("URL: ")
            elif line.startswith("API key: "):
                self.key = line.removeprefix("API key: ")

    def output(self) -> str:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return "\n".join(self.lines)
            if line is not None:
                self.lines.append(line)


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(ppid, state, start time) of a live process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0], fields[19]


def descendants(root: int) -> dict[int, str]:
    """Every process under ``root`` (children in their own sessions included), pid -> start time."""
    parents: dict[int, int] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _stat(int(entry.name))) is not None:
            parents[int(entry.name)], starts[int(entry.name)] = info[0], info[2]
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = starts[pid]
                frontier.append(pid)
    return found


def still_running(processes: dict[int, str]) -> list[int]:
    """Those of ``processes`` still alive (same pid and start time, not a zombie)."""
    alive = []
    for pid, started in processes.items():
        info = _stat(pid)
        if info is not None and info[2] == started and info[1] != "Z":
            alive.append(pid)
    return alive


@contextmanager
def dev_stack(workdir: Path, port: int) -> Iterator[DevStack]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOAD_")}
    env["PORT"] = str(port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "upload_service", "dev", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=workdir.parent,
    )
    stack = DevStack(proc)
    threading.Thread(target=stack.pump, daemon=True).start()
    try:
        yield stack
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until_done(url: str, key: str, upload_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{url}/v1/uploads/{upload_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        record: dict[str, Any] = response.json()
        if record["status"] in ("done", "failed") or time.monotonic() > deadline:
            return record
        time.sleep(0.2)


def assert_nothing_left(workdir: Path, children: dict[int, str]) -> None:
    assert children, "the stack started no processes?"
    deadline = time.monotonic() + 5
    while still_running(children) and time.monotonic() < deadline:
        time.sleep(0.1)  # grandchildren (nginx workers) are reaped by init a moment later
    assert still_running(children) == []
    assert sorted(workdir.rglob("*.pid")) == []


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def _worker_dirs(workdir: Path) -> list[Path]:
    """The directories outside ``workdir`` that nginx's workers use (socket dir, temp dir)."""
    config = (workdir / "nginx" / "nginx.conf").read_text()
    socket_dirs = [Path(p).parent for p in re.findall(r"server unix:(\S+?);", config)]
    temp_dirs = [Path(p).parent.parent for p in re.findall(r"client_body_temp_path (\S+);", config)]
    return [d for d in socket_dirs + temp_dirs if not d.is_relative_to(workdir)]


def test_the_dev_stack_runs_processes_and_stops_cleanly(tmp_path: Path) -> None:
    workdir = tmp_path / "var"
    port = free_port()

    with dev_stack(workdir, port) as stack:
        stack.wait_for_banner()
        assert stack.url == f"http://127.0.0.1:{port}"
        children = descendants(stack.proc.pid)
        workers = [pid for pid in children if b"nginx: worker process" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert workers, "nginx has no worker processes?"
        if os.geteuid() == 0:  # as root, the workers that parse client input are not root
            assert all(_uid(pid) != 0 for pid in workers), {pid: _uid(pid) for pid in workers}
        outside = _worker_dirs(workdir)
        response = httpx.post(
            f"{stack.url}/v1/uploads",
            files={"file": ("red.png", samples.png_bytes(), "image/png")},
            headers={"Authorization": f"Bearer {stack.key}"},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        upload_id = response.json()["id"]
        record = wait_until_done(stack.url, stack.key, upload_id)
        assert record["status"] == "done", record
        assert {a["name"] for a in record["artifacts"]} >= {"manifest.json", "thumb-256.webp"}
        stack.proc.send_signal(signal.SIGINT)
        assert stack.proc.wait(timeout=60) == 0, stack.output()
    first_output = stack.output()
    assert [d for d in outside if d.exists()] == []  # the workers' socket and temp dirs are gone
    assert f"Try: curl -H 'Authorization: Bearer {stack.key}'" in first_output
    assert_nothing_left(workdir, children)

    secrets_file = workdir / "secrets.env"
    for private in (secrets_file, workdir / "dev-key"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    for line in secrets_file.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            assert line.split("=", 1)[1] not in first_output  # S3 credentials are never printed

    # Second run: the same key, the same data; then a child dies and takes the stack down.
    with dev_stack(workdir, port) as again:
        again.wait_for_banner()
        assert again.key == stack.key
        assert wait_until_done(again.url, again.key, upload_id)["status"] == "done"
        children = descendants(again.proc.pid)
        worker = next(pid for pid in children if b"--queues\0images" in Path(f"/proc/{pid}/cmdline").read_bytes())
        os.kill(worker, signal.SIGKILL)
        assert again.proc.wait(timeout=60) == 1
    assert "worker-images exited unexpectedly" in again.output()
    assert_nothing_left(workdir, children)
