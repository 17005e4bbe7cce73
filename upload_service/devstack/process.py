"""``ManagedProcess``: one real service process we start, wait for, stop, kill and restart.

The same class serves the local run and test fixtures, so the services tests exercise are
started exactly as developers run them. The child gets its own session (process group), so
stopping it also stops anything it spawned and a Ctrl-C in the parent's terminal does not hit it
twice. Output goes to a log file whose tail is put into errors when a start fails.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

#: A readiness probe: True (or no exception) when the service answers. Exceptions count as
#: "not yet"; the last one is reported if the start times out.
Probe = Callable[[], bool]


class ProcessStartError(RuntimeError):
    """The process exited or did not become ready in time; the message holds the log tail."""


class ManagedProcess:
    """A long-running child process with a readiness probe; restartable with the same argv."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        ready: Probe,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        pid_path: Path | None = None,
        before_start: Callable[[], None] | None = None,
        after_stop: Callable[[], None] | None = None,
    ) -> None:
        """``before_start``/``after_stop`` run before each start and after each stop (or exit
        noticed): e.g. to make and remove a directory that must exist only while it runs."""
        self.name = name
        self.argv = tuple(argv)
        self.log_path = log_path
        self.pid_path = pid_path
        self._ready = ready
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self._before_start = before_start
        self._after_stop = after_stop

    def __repr__(self) -> str:  # argv only: the environment may hold credentials
        return f"ManagedProcess({self.name!r}, pid={self.pid}, running={self.is_running()})"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and return once the probe says it is ready.

        Raises ProcessStartError (with the log tail) if it exits or is not ready in
        ``timeout`` seconds; the process is stopped in that case.
        """
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._check_stale_pid_file()
        if self._before_start is not None:
            self._before_start()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- {self.name}: starting {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
                close_fds=True,
            )
        if self.pid_path is not None:
            self.pid_path.write_text(f"{self._proc.pid}\n")
        try:
            self._wait_ready(timeout)
        except BaseException:
            # Timeout, probe crash or Ctrl-C: the child has its own session, so nothing else
            # would stop it.
            self.stop(timeout=5.0)
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        delay = 0.01
        last_error: BaseException | None = None
        while True:
            code = self._proc.poll()
            if code is not None:
                self._forget()
                raise ProcessStartError(f"{self.name} exited with code {code} while starting\n{self.log_tail()}")
            try:
                if self._ready():
                    return
            except Exception as exc:  # any failure of the probe means "not yet"
                last_error = exc
            if time.monotonic() >= deadline:
                reason = f"; last probe error: {type(last_error).__name__}: {last_error}" if last_error else ""
                raise ProcessStartError(f"{self.name} not ready after {timeout:.1f}s{reason}\n{self.log_tail()}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` seconds; idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            self._signal_group(proc, signal.SIGCONT)  # a paused process handles SIGTERM only once resumed
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                proc.wait()
        self._forget()

    def kill(self) -> None:
        """SIGKILL the process group at once, as a crash would (fault tests)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal_group(proc, signal.SIGKILL)
            proc.wait()
        self._forget()

    def pause(self) -> None:
        """SIGSTOP the process group: it keeps its sockets but answers nothing (a hung
        dependency, for timeout tests). ``resume()`` undoes it; ``stop()``/``kill()`` also work."""
        if self._proc is not None and self._proc.poll() is None:
            self._signal_group(self._proc, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the process group after ``pause()``."""
        if self._proc is not None and self._proc.poll() is None:
            self._signal_group(self._proc, signal.SIGCONT)

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        return "\n".join(text.splitlines()[-lines:])

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        # The child leads its own session, so its pgid is its pid while it is unreaped.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def _forget(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        if self.pid_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.pid_path.unlink()
        if self._after_stop is not None:
            self._after_stop()

    def _check_stale_pid_file(self) -> None:
        """Refuse to start over a live process recorded in the pid file; drop a stale file."""
        if self.pid_path is None or not self.pid_path.exists():
            return
        try:
            pid = int(self.pid_path.read_text().strip())
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            self.pid_path.unlink(missing_ok=True)
            return
        except PermissionError:
            pass  # alive, owned by someone else
        cmdline = Path(f"/proc/{pid}/cmdline")
        with contextlib.suppress(OSError):
            first = cmdline.read_bytes().split(b"\0", 1)[0].decode(errors="replace")
            if os.path.basename(first) != os.path.basename(self.argv[0]):
                self.pid_path.unlink(missing_ok=True)  # pid reused by an unrelated program
                return
        raise RuntimeError(f"{self.name} seems to run already (pid {pid} in {self.pid_path})")

    def __enter__(self) -> ManagedProcess:
        if not self.is_running():
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# -- ports --------------------------------------------------------------------------------

_GRPC_OFFSET = 10000  # SeaweedFS listens for gRPC on every HTTP port + 10000


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    """Lowest port the kernel hands out for outgoing connections (Linux), else 32768."""
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


def free_port(span: int = 1) -> int:
    """A loopback port ``p`` with ``p .. p+span-1`` and ``p+10000 .. p+10000+span-1`` all free.

    Ports are drawn below the kernel's ephemeral range, so outgoing connections made later can't
    take them (which matters when a service is restarted at the same address). Another program
    may still take one between this check and the bind: callers fail loudly, never silently.
    """
    if span < 1:
        raise ValueError("span must be >= 1")
    high = min(_ephemeral_low(), 65536) - _GRPC_OFFSET - span
    low = 10000
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randrange(low, high) if high > low else rng.randrange(20000, 55535 - span)
        candidates = [port + i for i in range(span)] + [port + _GRPC_OFFSET + i for i in range(span)]
        if all(_port_is_free(p) for p in candidates):
            return port
    raise RuntimeError(f"no free loopback port block of span {span}")
