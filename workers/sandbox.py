"""Run one file's pipeline in a child process under its own CPU, memory and wall-clock budget.

The byte scans and header budgets refuse the decoder work factors we know of; this is the
backstop for the ones we don't. The work-horse forks a child that

- gets ``RLIMIT_AS`` = the work-horse's address space at fork + ``memory_bytes`` (allocations
  past it fail with ``MemoryError`` or kill the child), ``RLIMIT_CPU`` = ``cpu_seconds`` (SIGXCPU,
  then SIGKILL one second later) and no core dumps;
- dies with its parent (``PR_SET_PDEATHSIG``) and sits in the work-horse's process group, so a
  killed work-horse never leaves it running;
- has every inherited socket (the work-horse's DB and Redis connections) replaced by
  ``/dev/null`` before it reads a byte of the file, so it cannot use, or corrupt, them;
- runs ``run_pipeline_for``, writes a JSON outcome to a pipe and leaves with ``os._exit`` (no
  atexit handlers, no finalizers touching the parent's resources).

The parent reads the pipe until EOF or the wall-clock budget, SIGKILLs a child past it, and reaps
it with ``os.wait4`` to get its peak RSS and CPU, logged for every file and added to the error's
internal detail. The outcome travels as JSON, never pickle: a child that a hostile file took over
must not be able to run code in the work-horse through its answer.

Fork, not spawn: forking the work-horse costs ~1-2 ms a file; spawning a fresh interpreter that
imports Pillow, pikepdf and pypdfium2 costs ~250 ms (docs/security.md has the measurements).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import os
import resource
import select
import signal
import stat
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.pipelines import ImageLimits, PdfLimits, run_pipeline_for
from workers.pipelines.base import ArtifactFile, PipelineResult, ProcessingError

log = logging.getLogger("workers.sandbox")

_PR_SET_PDEATHSIG = 1
_KILL_GRACE_SECONDS = 0.25
_CHILD_FAILED = 70


@dataclass(frozen=True)
class SandboxLimits:
    """One file's budget: CPU seconds, extra address space and wall-clock seconds."""

    cpu_seconds: int = 60
    memory_bytes: int = 1536 * 1024 * 1024
    wall_seconds: float = 90.0

    def __post_init__(self) -> None:
        if self.cpu_seconds < 1 or self.memory_bytes < 1 or self.wall_seconds <= 0:
            raise ValueError("sandbox limits must be positive")


@dataclass(frozen=True)
class ResourceUsage:
    """What one child used, from ``os.wait4``'s rusage (peak RSS counts the pages it shares
    with the work-horse; ``baseline_rss_bytes`` is the work-horse's RSS at fork)."""

    cpu_seconds: float
    peak_rss_bytes: int
    baseline_rss_bytes: int
    wall_seconds: float

    @property
    def rss_growth_bytes(self) -> int:
        return max(self.peak_rss_bytes - self.baseline_rss_bytes, 0)

    def describe(self) -> str:
        mib = 1024 * 1024
        return (
            f"cpu {self.cpu_seconds:.2f} s, peak rss {self.peak_rss_bytes / mib:.0f} MiB "
            f"(+{self.rss_growth_bytes / mib:.0f} MiB over the worker), wall {self.wall_seconds:.2f} s"
        )


def run_pipeline_sandboxed(
    kind: str,
    src: Path,
    out_dir: Path,
    deadline: float,
    limits: SandboxLimits,
    *,
    image_limits: ImageLimits | None = None,
    pdf_limits: PdfLimits | None = None,
    in_child: Callable[[], None] | None = None,
) -> tuple[PipelineResult, ResourceUsage]:
    """``run_pipeline_for`` in a child process under ``limits``; also stops at ``deadline``
    (the job's), whichever comes first. ``in_child`` runs in the confined child just before the
    pipeline (the job's fail point there).

    A ``PROCESSING_TIMEOUT`` is permanent when the file's own wall-clock budget ran out (running
    it again would take as long) and transient when the job's deadline came first (time lost
    to a slow download, for instance). CPU and memory budgets are always the file's own.
    """

    def pipeline(child_deadline: float) -> PipelineResult:
        if in_child is not None:
            in_child()
        return run_pipeline_for(
            kind, src, out_dir, child_deadline, image_limits=image_limits, pdf_limits=pdf_limits
        )

    return run_sandboxed(pipeline, deadline, limits)


def run_sandboxed(
    pipeline: Callable[[float], PipelineResult], deadline: float, limits: SandboxLimits
) -> tuple[PipelineResult, ResourceUsage]:
    """Run ``pipeline(deadline)`` in a forked child under ``limits`` (see the module doc)."""
    started = time.monotonic()
    own_deadline = started + limits.wall_seconds
    own_budget = own_deadline <= deadline
    child_deadline = min(own_deadline, deadline)
    baseline_rss, baseline_vm = _memory_now()
    read_fd, write_fd = os.pipe()
    gc.freeze()  # the child's collector then skips the inherited objects: fewer copied pages
    try:
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_fd)
            _child(pipeline, child_deadline, limits, baseline_vm, write_fd)
    finally:
        gc.unfreeze()
        os.close(write_fd)
    reaped = False
    try:
        payload, killed = _read_outcome(read_fd, pid, child_deadline + _KILL_GRACE_SECONDS)
        _, status, rusage = os.wait4(pid, 0)
        reaped = True
    finally:
        os.close(read_fd)
        if not reaped:  # an exception in the parent (RQ's own timeout): take the child down too
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.wait4(pid, 0)
    usage = ResourceUsage(
        cpu_seconds=rusage.ru_utime + rusage.ru_stime,
        peak_rss_bytes=rusage.ru_maxrss * 1024,  # Linux reports KiB
        baseline_rss_bytes=baseline_rss,
        wall_seconds=time.monotonic() - started,
    )
    log.info("pipeline child: %s", usage.describe(), extra={
        "child_cpu_seconds": round(usage.cpu_seconds, 3),
        "child_peak_rss_bytes": usage.peak_rss_bytes,
        "child_rss_growth_bytes": usage.rss_growth_bytes,
    })
    return _verdict(payload, status, killed, usage, limits, own_budget), usage


# --- the child ----------------------------------------------------------------------------------


def _child(
    pipeline: Callable[[float], PipelineResult],
    deadline: float,
    limits: SandboxLimits,
    baseline_vm: int,
    write_fd: int,
) -> None:
    code = _CHILD_FAILED
    try:
        try:
            _confine(limits, baseline_vm, write_fd)
        except Exception as exc:  # noqa: BLE001 - the environment's fault, not the file's
            outcome = _unexpected(exc)
        else:
            outcome = _outcome(pipeline, deadline)
        data = json.dumps(outcome, default=str).encode()
        while data:
            data = data[os.write(write_fd, data):]
        code = 0
    finally:
        os._exit(code)


def _confine(limits: SandboxLimits, baseline_vm: int, keep_fd: int) -> None:
    """Limits first, then cut the inherited connections: before any byte of the file is read."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(_CHILD_FAILED)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
        signal.signal(sig, signal.SIG_DFL)
    _lower_limit(resource.RLIMIT_AS, baseline_vm + limits.memory_bytes, baseline_vm + limits.memory_bytes)
    _lower_limit(resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1)
    _lower_limit(resource.RLIMIT_CORE, 0, 0)
    _silence_sockets(keep_fd)


def _lower_limit(which: int, soft: int, hard: int) -> None:
    """Set a limit, never above what the process already has (a container may set less)."""
    current_soft, current_hard = resource.getrlimit(which)

    def capped(value: int, current: int) -> int:
        return value if current == resource.RLIM_INFINITY else min(value, current)

    resource.setrlimit(which, (capped(soft, current_hard), capped(hard, current_hard)))


def _silence_sockets(keep_fd: int) -> None:
    """Point every inherited socket at /dev/null, keeping the descriptor numbers taken (closing
    them would let a later open reuse a number some parent object still believes it owns)."""
    null = os.open(os.devnull, os.O_RDWR)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd in (keep_fd, null) or fd <= 2:
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.dup2(null, fd)
    os.close(null)


def _outcome(pipeline: Callable[[float], PipelineResult], deadline: float) -> dict[str, Any]:
    try:
        result = pipeline(deadline)
    except ProcessingError as exc:
        return {"error": {
            "code": exc.code, "message": exc.message, "permanent": exc.permanent,
            "internal": exc.internal, "step": exc.step,
        }}
    except MemoryError as exc:
        return {"memory": repr(exc)}
    except Exception as exc:  # noqa: BLE001 - every failure must reach the parent as data
        return _unexpected(exc)
    return {"result": {
        "artifacts": [[a.name, str(a.path), a.content_type] for a in result.artifacts],
        "info": result.info,
    }}


def _unexpected(exc: Exception) -> dict[str, Any]:
    return {"exception": {
        "type": type(exc).__name__, "os_error": isinstance(exc, OSError), "text": str(exc),
        "trace": "".join(traceback.format_exception(exc)),
    }}


# --- the parent ---------------------------------------------------------------------------------


def _memory_now() -> tuple[int, int]:
    """This process's resident and virtual size in bytes (from /proc/self/statm)."""
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm", encoding="ascii") as statm:
        size, resident = (int(field) for field in statm.read().split()[:2])
    return resident * page, size * page


def _read_outcome(read_fd: int, pid: int, kill_at: float) -> tuple[bytes, bool]:
    """Read the child's answer until EOF; SIGKILL the child when ``kill_at`` passes first."""
    chunks: list[bytes] = []
    poller = select.poll()
    poller.register(read_fd, select.POLLIN | select.POLLHUP)
    while True:
        remaining = kill_at - time.monotonic()
        if remaining <= 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return b"".join(chunks), True
        if not poller.poll(remaining * 1000):
            continue
        chunk = os.read(read_fd, 65536)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)


def _verdict(
    payload: bytes, status: int, killed: bool, usage: ResourceUsage, limits: SandboxLimits, own_budget: bool
) -> PipelineResult:
    """The child's result, or the ``ProcessingError`` (or re-raised failure) it amounts to."""
    used = usage.describe()
    if killed:
        raise ProcessingError(
            "PROCESSING_TIMEOUT", permanent=own_budget,
            internal=(f"killed after its {limits.wall_seconds} s wall-clock budget" if own_budget
                      else "killed at the job's deadline") + f"; {used}",
        )
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and usage.cpu_seconds >= limits.cpu_seconds):
            raise ProcessingError(
                "PROCESSING_TIMEOUT", internal=f"CPU budget of {limits.cpu_seconds} s spent; {used}"
            )
        code = "PROCESSING_MEMORY_EXCEEDED" if sig == signal.SIGKILL else "PROCESSING_CRASHED"
        raise ProcessingError(code, internal=f"pipeline child killed by {signal.Signals(sig).name}; {used}")
    try:
        outcome = json.loads(payload)
    except ValueError:
        outcome = {}
    if "result" in outcome:
        result = outcome["result"]
        artifacts = [ArtifactFile(name, Path(path), kind) for name, path, kind in result["artifacts"]]
        return PipelineResult(artifacts=artifacts, info=result["info"])
    if "error" in outcome:
        fields = outcome["error"]
        permanent = own_budget if fields["code"] == "PROCESSING_TIMEOUT" else fields["permanent"]
        error = ProcessingError(
            fields["code"], fields["message"], permanent=permanent, internal=f"{fields['internal']}; {used}"
        )
        error.step = fields["step"]
        raise error
    if "memory" in outcome:
        raise ProcessingError(
            "PROCESSING_MEMORY_EXCEEDED",
            internal=f"memory budget of {limits.memory_bytes} bytes reached: {outcome['memory']}; {used}",
        )
    if "exception" in outcome:
        failure = outcome["exception"]
        text = f"pipeline child raised {failure['type']}: {failure['text']}"
        error_class = OSError if failure["os_error"] else RuntimeError
        exc = error_class(text)
        exc.add_note(failure["trace"])
        raise exc
    raise ProcessingError(
        "PROCESSING_CRASHED", internal=f"pipeline child exited {os.WEXITSTATUS(status)} without an answer; {used}"
    )
