"""Dependency checks for ``/readyz`` and ``/health``: each with a status and its latency.

``/readyz`` asks only what is local to this node (its spool disk, its own DB pool), so one
shared dependency's outage can't take every node out of a load balancer at once; ``/health``
adds the shared ones (Redis, S3, queue depth, workers) for dashboards and alerting.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio import to_thread

Check = Callable[[], str | None]  # raises on failure; may return a detail string


class CheckFailed(Exception):
    """A failed check whose message is safe to show (no addresses, paths or secrets)."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    latency_ms: float
    detail: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"status": "ok" if self.ok else "fail", "latency_ms": round(self.latency_ms, 2), "detail": self.detail}

    def as_public_dict(self) -> dict[str, object]:
        """For a public answer: the verdict only (no byte counts, timings or error text)."""
        return {"status": "ok" if self.ok else "fail"}


def spool_check(spool_dir: Path, min_free_bytes: int) -> Check:
    """The spool can take an upload: a file can be created in it, and it has free space."""
    space = spool_space_check(spool_dir, min_free_bytes)

    def check() -> str:
        probe = spool_dir / f".probe-{secrets.token_hex(8)}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise CheckFailed(f"not writable ({errno.errorcode.get(exc.errno or 0, 'error')})") from None
        os.close(fd)
        probe.unlink(missing_ok=True)
        return space()

    return check


def spool_space_check(spool_dir: Path, min_free_bytes: int) -> Check:
    def check() -> str:
        free = shutil.disk_usage(spool_dir).free
        if free < min_free_bytes:
            raise CheckFailed(f"{free} bytes free, below the threshold of {min_free_bytes}")
        return f"{free} bytes free"

    return check


async def run_checks(checks: dict[str, Check], *, timeout_seconds: float = 3.0) -> list[CheckResult]:
    results: list[CheckResult] = []

    async def run_one(name: str, check: Check) -> None:
        started = time.perf_counter()
        try:
            with anyio.fail_after(timeout_seconds):
                detail = await to_thread.run_sync(check, abandon_on_cancel=True)
            results.append(CheckResult(name, True, (time.perf_counter() - started) * 1000, detail))
        except BaseException as exc:  # noqa: BLE001 - any failure is a failed check
            if not isinstance(exc, Exception | TimeoutError):
                raise
            if isinstance(exc, TimeoutError):
                message = "timed out"
            elif isinstance(exc, CheckFailed):
                message = str(exc)
            else:
                message = f"unavailable ({type(exc).__name__})"
            results.append(CheckResult(name, False, (time.perf_counter() - started) * 1000, message))

    async with anyio.create_task_group() as group:
        for name, check in checks.items():
            group.start_soon(run_one, name, check)
    return sorted(results, key=lambda r: r.name)
