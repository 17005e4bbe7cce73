"""The one place that builds RQ queues: JSON serializer, job ids, timeouts and retry policy.

The API enqueues by dotted path (``workers.jobs.process_upload``) and never imports ``workers``.
Job arguments are plain JSON (ids and the request id), never pickled objects or paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from redis import Redis
from rq import Queue, Retry, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from upload_service.media import PDF
from upload_service.settings import QueueSettings, RedisSettings

PROCESS_JOB = "workers.jobs.process_upload"
SERIALIZER = JSONSerializer


_LIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


def job_id_for(upload_id: str) -> str:
    """Deterministic: one upload, one job id, however often it is enqueued."""
    return f"process-{upload_id}"


def connect(settings: RedisSettings) -> Redis:
    return Redis.from_url(
        settings.url,
        socket_timeout=settings.socket_timeout_seconds,
        socket_connect_timeout=settings.socket_timeout_seconds,
    )


@dataclass(frozen=True)
class ProcessingJob:
    """What a processing job is enqueued with: the upload, its media kind, the request id."""

    upload_id: str
    kind: str
    request_id: str | None = None


@dataclass(frozen=True)
class JobPolicy:
    queue: str
    timeout_seconds: int


class JobQueue:
    def __init__(self, connection: Redis, settings: QueueSettings) -> None:
        self.connection = connection
        self.settings = settings

    def policy(self, kind: str) -> JobPolicy:
        if kind == PDF:
            return JobPolicy(self.settings.pdf_queue, self.settings.pdf_timeout_seconds)
        return JobPolicy(self.settings.image_queue, self.settings.image_timeout_seconds)

    def queue(self, name: str) -> Queue:
        return Queue(name, connection=self.connection, serializer=SERIALIZER)

    def queue_names(self) -> list[str]:
        return [self.settings.image_queue, self.settings.pdf_queue]

    def enqueue_processing(self, upload_id: str, kind: str, *, request_id: str | None = None) -> tuple[Job, bool]:
        """Enqueue the processing job of one upload, or leave a live one alone.

        Returns the job and whether it was enqueued now.
        """
        existing = self.live_job(upload_id)
        if existing is not None:
            return existing, False
        policy = self.policy(kind)
        job = self.queue(policy.queue).enqueue_call(**self._job_arguments(ProcessingJob(upload_id, kind, request_id)))
        return job, True

    def enqueue_new_uploads(self, jobs: Sequence[ProcessingJob]) -> list[Job]:
        """Enqueue the processing jobs of just-committed uploads (a group commit's batch) in one
        Redis round trip: one pipeline, ``Queue.enqueue_many`` per queue, the same job ids and
        policies as ``enqueue_processing``. New uploads have no job yet, so there is no check
        for a live one; a job id enqueued twice is still one job."""
        if not jobs:
            return []
        by_queue: dict[str, list[ProcessingJob]] = {}
        for job in jobs:
            by_queue.setdefault(self.policy(job.kind).queue, []).append(job)
        enqueued: list[Job] = []
        with self.connection.pipeline() as pipe:
            for name, queued in by_queue.items():
                queue = self.queue(name)
                datas = [Queue.prepare_data(**self._job_arguments(job)) for job in queued]
                enqueued += queue.enqueue_many(datas, pipeline=pipe)
            pipe.execute()
        return enqueued

    def _job_arguments(self, job: ProcessingJob) -> dict[str, Any]:
        policy = self.policy(job.kind)
        intervals = self.settings.retry_intervals_seconds
        return {
            "func": PROCESS_JOB,
            "args": (job.upload_id, job.request_id),
            "job_id": job_id_for(job.upload_id),
            "timeout": policy.timeout_seconds,
            "retry": Retry(max=max(len(intervals), 1), interval=intervals or [0]),
            "result_ttl": self.settings.result_ttl_seconds,
            "failure_ttl": 7 * 24 * 3600,
            "description": f"process {job.kind} upload {job.upload_id}",
        }

    def live_job(self, upload_id: str) -> Job | None:
        """The upload's job if it is queued, running or waiting for a retry."""
        try:
            job = Job.fetch(job_id_for(upload_id), connection=self.connection, serializer=SERIALIZER)
        except NoSuchJobError:
            return None
        return job if job.get_status(refresh=False) in _LIVE else None

    def release_overdue_retry(self, job: Job, grace_seconds: int) -> bool:
        """Enqueue now a retry whose time passed ``grace_seconds`` ago without a scheduler
        moving it (a killed worker's scheduler holds its lock for a minute or two)."""
        if job.get_status(refresh=False) != JobStatus.SCHEDULED or job.origin is None:
            return False
        registry = ScheduledJobRegistry(job.origin, connection=self.connection, serializer=SERIALIZER)
        try:
            due = registry.get_scheduled_time(job)
        except NoSuchJobError:
            return False
        if due.tzinfo is None:
            due = due.replace(tzinfo=timezone.utc)
        if due > datetime.now(timezone.utc) - timedelta(seconds=grace_seconds):
            return False
        registry.remove(job)
        self.queue(job.origin).enqueue_job(job)
        return True

    def drop_job(self, upload_id: str) -> None:
        """Forget the upload's job record (a stalled one whose worker died)."""
        try:
            Job.fetch(job_id_for(upload_id), connection=self.connection, serializer=SERIALIZER).delete()
        except NoSuchJobError:
            pass

    def worker_counts(self) -> dict[str, int]:
        """How many live RQ workers listen on each of our queues."""
        counts = dict.fromkeys(self.queue_names(), 0)
        for worker in Worker.all(connection=self.connection):
            for name in worker.queue_names():
                if name in counts:
                    counts[name] += 1
        return counts

    def ping(self) -> None:
        self.connection.ping()
