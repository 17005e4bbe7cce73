"""Admission control: refuse new uploads early, before their body is read, when the spool disk
or a queue is past its watermark. The client gets ``Retry-After`` and can come back later."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from redis.exceptions import RedisError

from upload_service.errors import ErrorCode, ServiceError
from upload_service.health import CheckFailed
from upload_service.jobqueue import JobQueue
from upload_service.settings import AdmissionSettings

T = TypeVar("T")

#: How long one reading of the spool disk's free space is used for admission.
_FREE_SPACE_CACHE_SECONDS = 0.5


class Admission:
    def __init__(self, settings: AdmissionSettings, spool_dir: Path, min_free_bytes: int, queue: JobQueue) -> None:
        self._settings = settings
        self._spool_dir = spool_dir
        self._min_free_bytes = min_free_bytes
        self._queue = queue
        self._depths = _Remembered(settings.depth_cache_seconds, self._read_depths)
        self._free = _Remembered(_FREE_SPACE_CACHE_SECONDS, lambda: shutil.disk_usage(self._spool_dir).free)

    def check(self) -> None:
        """Raise 507/503 with Retry-After if a watermark is crossed."""
        retry = {"Retry-After": str(self._settings.retry_after_seconds)}
        free = self.free_bytes()
        if free < self._min_free_bytes:
            raise ServiceError(
                ErrorCode.INSUFFICIENT_STORAGE,
                "the service is low on storage; try again later",
                internal=f"spool free {free} < {self._min_free_bytes}",
                headers=retry,
            )
        over = self.queues_over_watermark()
        if over:
            raise ServiceError(
                ErrorCode.DEPENDENCY_UNAVAILABLE,
                "the service is busy processing earlier uploads; try again later",
                details={"queues": over},
                headers=retry,
            )

    def free_bytes(self) -> int:
        """The spool disk's free bytes, read at most every ``_FREE_SPACE_CACHE_SECONDS`` (a
        ``statvfs`` per upload was ~2 % of the API's CPU under load)."""
        return self._free.get()

    @property
    def needs_redis(self) -> bool:
        """Whether ``check`` would read Redis (blocking I/O) rather than its cached depths."""
        if self._settings.max_queue_depth == 0:
            return False
        return self._depths.stale

    def queues_over_watermark(self) -> list[str]:
        limit = self._settings.max_queue_depth
        if limit == 0:
            return []
        return sorted(name for name, depth in self.queue_depths().items() if depth >= limit)

    def queue_depths(self) -> dict[str, int]:
        """Waiting jobs per queue, read at most once per ``depth_cache_seconds``. An unreachable
        Redis reads as empty: uploads are still accepted and reconciled later."""
        return self._depths.get()

    def _read_depths(self) -> dict[str, int]:
        try:
            return {name: self._queue.queue(name).count for name in self._queue.queue_names()}
        except RedisError:
            return {}

    def readiness_check(self) -> str:
        over = self.queues_over_watermark()
        if over:
            raise CheckFailed(f"queue depth past the watermark: {', '.join(over)}")
        return "accepting uploads"


class _Remembered(Generic[T]):
    """``read()``'s value, read again once it is ``seconds`` old (not thread-safe: the event
    loop's, or a thread's while the loop waits for it; a race only reads twice)."""

    def __init__(self, seconds: float, read: Callable[[], T]) -> None:
        self._seconds = seconds
        self._read = read
        self._value: T | None = None
        self._taken_at = float("-inf")

    @property
    def stale(self) -> bool:
        return time.monotonic() - self._taken_at >= self._seconds

    def get(self) -> T:
        if self._value is None or self.stale:
            self._value = self._read()
            self._taken_at = time.monotonic()
        return self._value
