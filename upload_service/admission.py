"""Admission control: refuse new uploads early, before their body is read, when the spool disk
or a queue is past its watermark. The client gets ``Retry-After`` and can come back later."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from redis.exceptions import RedisError

from upload_service.errors import ErrorCode, ServiceError
from upload_service.health import CheckFailed
from upload_service.jobqueue import JobQueue
from upload_service.settings import AdmissionSettings

#: How long one reading of the spool disk's free space is used for admission.
_FREE_SPACE_CACHE_SECONDS = 0.5


class Admission:
    def __init__(self, settings: AdmissionSettings, spool_dir: Path, min_free_bytes: int, queue: JobQueue) -> None:
        self._settings = settings
        self._spool_dir = spool_dir
        self._min_free_bytes = min_free_bytes
        self._queue = queue
        self._depth: tuple[float, dict[str, int]] = (0.0, {})
        self._free: tuple[float, int] | None = None  # (when read, free bytes)

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
        now = time.monotonic()
        if self._free is None or now - self._free[0] >= _FREE_SPACE_CACHE_SECONDS:
            self._free = (now, shutil.disk_usage(self._spool_dir).free)
        return self._free[1]

    @property
    def needs_redis(self) -> bool:
        """Whether ``check`` would read Redis (blocking I/O) rather than its cached depths."""
        if self._settings.max_queue_depth == 0:
            return False
        return time.monotonic() - self._depth[0] >= self._settings.depth_cache_seconds

    def queues_over_watermark(self) -> list[str]:
        limit = self._settings.max_queue_depth
        if limit == 0:
            return []
        return sorted(name for name, depth in self.queue_depths().items() if depth >= limit)

    def queue_depths(self) -> dict[str, int]:
        """Waiting jobs per queue, read at most once per ``depth_cache_seconds``. An unreachable
        Redis reads as empty: uploads are still accepted and reconciled later."""
        taken_at, depths = self._depth
        if time.monotonic() - taken_at < self._settings.depth_cache_seconds:
            return depths
        try:
            depths = {name: self._queue.queue(name).count for name in self._queue.queue_names()}
        except RedisError:
            depths = {}
        self._depth = (time.monotonic(), depths)
        return depths

    def readiness_check(self) -> str:
        over = self.queues_over_watermark()
        if over:
            raise CheckFailed(f"queue depth past the watermark: {', '.join(over)}")
        return "accepting uploads"
