"""Prometheus metrics: the API's own, and the workers' aggregated in Redis.

Workers run on many machines and RQ's forking worker runs each job in a short-lived child, so a
per-process registry would lose job metrics. Jobs instead add their outcome and duration to a
few Redis hashes (one ``HINCRBY`` pipeline per job); the API's ``/metrics`` reads them, with the
queue depth and oldest job age per queue, at scrape time. One scrape target shows it all.

``serve --workers N`` runs N API processes behind one socket; a scrape reaches any one of them.
Their own series (counters, histograms, the in-flight and build-info gauges) then live in
prometheus-client's multiprocess mode: each process writes its values to files in a private
directory that ``serve`` creates before the processes start and removes at exit
(``multiprocess_metrics_dir``), and the process that answers merges all the files. Series read
at scrape time (queue, jobs, webhooks, journal backlog) are node- or cluster-wide facts: they
are collected by the answering process alone, once.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Self

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job

from upload_service.jobqueue import SERIALIZER, JobQueue
from upload_service.media import IMAGE, PDF
from upload_service.pids import pid_alive

INGEST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: After the body: milliseconds for a small upload, a part's upload for a large one.
FINISH_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_JOBS_KEY = "upload:metrics:jobs"  # field "<kind>|<outcome>|<code>" → count
_DURATION_KEY = "upload:metrics:job_seconds:{kind}"  # fields: bucket bounds, "sum", "count"
#: ``type`` label values besides the allowed types: detected but not allowed, and not detected.
OTHER_TYPE = "other"
UNKNOWN_TYPE = "unknown"
#: prometheus-client's own switch: set before it is imported, its values go to files there.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
_MULTIPROCESS_DIR_PREFIX = "upload-service-metrics-"


def type_label(media_type: str | None, allowed_types: Collection[str]) -> str:
    """A bounded ``type`` label: an allowed type, ``other`` or ``unknown`` (nothing detected).

    The detected type of a refused upload is whatever libmagic says about the client's bytes;
    used as a label as is, any client could mint new time series at will."""
    if not media_type:
        return UNKNOWN_TYPE
    return media_type if media_type in allowed_types else OTHER_TYPE


def service_version() -> str:
    """The installed package's version (``0+unknown`` when run from an uninstalled tree)."""
    try:
        return metadata.version("upload-service")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class _RememberedLabels:
    """``labels()`` answered from a dict after the first call with a label set.

    prometheus-client checks, sorts and converts the label arguments and takes a lock on every
    ``labels()`` call (1.5-3 µs, more than the ``inc()`` it precedes); the API's label sets are
    bounded (``type_label``, ``route_label``), so each child is looked up once per process."""

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Self:
        remembered: dict[tuple[Any, ...], Self] = self.__dict__.setdefault("_remembered", {})
        key = (labelvalues, tuple(labelkwargs.items()))
        child = remembered.get(key)
        if child is None:
            child = remembered[key] = super().labels(*labelvalues, **labelkwargs)  # type: ignore[misc]
        return child


class _Counter(_RememberedLabels, Counter):
    pass


class _Histogram(_RememberedLabels, Histogram):
    pass


class _Gauge(_RememberedLabels, Gauge):
    pass


class ApiMetrics:
    """The API process's metrics, on a registry of its own (no global state).

    ``registry`` holds this process's own series. ``scrape_registry`` is what ``/metrics``
    answers: the same registry in a single process; with ``multiprocess_dir`` (``serve
    --workers N``), the merged files of every API process of this server instead. Collectors
    added with ``add_collector`` (read at scrape time) go on the scrape registry only, so they
    are exported once by whichever process answers, never summed over processes.
    """

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if multiprocess_dir is None:
            self.scrape_registry = self.registry
        else:
            if not getattr(values.ValueClass, "_multiprocess", False):
                raise RuntimeError(f"{MULTIPROCESS_ENV} was set after prometheus_client was imported")
            self.scrape_registry = CollectorRegistry()
            MultiProcessCollector(self.scrape_registry, path=str(multiprocess_dir))
        self.uploads = _Counter(
            "upload_uploads", "Upload requests by outcome, error code and detected type",
            ["outcome", "code", "type"], registry=self.registry,
        )
        self.received_bytes = _Counter(
            "upload_received_bytes", "Request body bytes read by upload requests", registry=self.registry
        )
        self.ingest_seconds = _Histogram(
            "upload_ingest_duration_seconds", "Time from the start of an upload request to its answer",
            ["outcome"], buckets=INGEST_BUCKETS, registry=self.registry,
        )
        self.finish_seconds = _Histogram(
            "upload_finish_duration_seconds",
            "Time from an accepted upload's last body byte to its answer: the rest of the original "
            "stored, the group commit, the enqueue",
            buckets=FINISH_BUCKETS, registry=self.registry,
        )
        # Summed over the live processes; a dead process's files are dropped (forget_process).
        self.in_flight = _Gauge(
            "upload_uploads_in_flight", "Upload requests being read now", registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.audit_write_failures = _Counter(
            "upload_audit_write_failures", "Audit events the DB refused (they went to the journal)",
            ["action"], registry=self.registry,
        )
        self.http_requests = _Counter(
            "upload_http_requests", "HTTP requests by method, route template and status",
            ["method", "route", "status"], registry=self.registry,
        )
        # One series per version that a live process runs, not one per process: after a rolling
        # restart (SIGHUP) into a new release the old version's series goes with its processes.
        self.build_info = _Gauge(
            "upload_build_info", "Always 1; the running version in a label", ["version"], registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.build_info.labels(version=service_version()).set(1)

    def add_collector(self, collector: Collector) -> None:
        """A collector read at scrape time, exported once per scrape (not per process)."""
        self.scrape_registry.register(collector)

    def watch_journal(self, backlog: Callable[[], int]) -> None:
        """The node's journal backlog (every process of a node shares its journal)."""
        self.add_collector(JournalBacklogCollector(backlog))

    def add_queue_collector(self, queue: JobQueue) -> None:
        self.add_collector(QueueCollector(queue))


class JournalBacklogCollector(Collector):
    """``upload_audit_journal_backlog``, counted in the journal files at scrape time."""

    def __init__(self, backlog: Callable[[], int]) -> None:
        self._backlog = backlog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            count = self._backlog()
        except OSError:  # an unreadable journal shows as a missing series, not a failed scrape
            return
        family = GaugeMetricFamily("upload_audit_journal_backlog", "Audit events in the local journal waiting for the DB")
        family.add_metric([], count)
        yield family


# --- several API processes (serve --workers N) ----------------------------------------------


def multiprocess_dir() -> Path | None:
    """The multiprocess directory ``serve`` named for this process, if any."""
    value = os.environ.get(MULTIPROCESS_ENV)
    return Path(value) if value else None


@contextmanager
def multiprocess_metrics_dir() -> Iterator[Path]:
    """A fresh private (0700) directory for prometheus-client's multiprocess mode, named in
    ``PROMETHEUS_MULTIPROC_DIR`` for the processes started inside the block and removed after
    it. Directories left by a predecessor that was killed (its pid is gone) are removed first,
    so no stale file of an earlier run is ever merged and none piles up in the temp dir."""
    base = Path(tempfile.gettempdir())
    _remove_orphaned_dirs(base)
    path = Path(tempfile.mkdtemp(prefix=f"{_MULTIPROCESS_DIR_PREFIX}{os.getpid()}-", dir=base))
    previous = os.environ.get(MULTIPROCESS_ENV)
    os.environ[MULTIPROCESS_ENV] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROCESS_ENV, None)
        else:
            os.environ[MULTIPROCESS_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def forget_process(pid: int, directory: Path) -> None:
    """An API process exited: drop its live gauges (in flight, build info). Its counters and
    histograms stay in the directory, so what it counted is never lost from the totals."""
    mark_process_dead(pid, str(directory))


def _remove_orphaned_dirs(base: Path) -> None:
    for entry in base.glob(_MULTIPROCESS_DIR_PREFIX + "*"):
        try:
            pid = int(entry.name[len(_MULTIPROCESS_DIR_PREFIX):].split("-", 1)[0])
            info = entry.lstat()
        except (ValueError, OSError):
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not pid_alive(pid):
            shutil.rmtree(entry, ignore_errors=True)




def record_job(connection: Redis, kind: str, outcome: str, code: str, seconds: float) -> None:
    """A worker's job outcome and duration, added to the shared counters in Redis."""
    key = _DURATION_KEY.format(kind=kind)
    with connection.pipeline(transaction=False) as pipe:
        pipe.hincrby(_JOBS_KEY, f"{kind}|{outcome}|{code}", 1)
        for bound in JOB_BUCKETS:
            if seconds <= bound:
                pipe.hincrby(key, repr(float(bound)), 1)
        pipe.hincrbyfloat(key, "sum", seconds)
        pipe.hincrby(key, "count", 1)
        pipe.execute()


class QueueCollector(Collector):
    """Queue depth and oldest job age per queue, and the workers' job counters, read from Redis."""

    def __init__(self, queue: JobQueue) -> None:
        self._queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        depth = GaugeMetricFamily("upload_queue_depth", "Jobs waiting in each queue", labels=["queue"])
        oldest = GaugeMetricFamily("upload_queue_oldest_job_age_seconds", "Age of the oldest waiting job", labels=["queue"])
        up = GaugeMetricFamily("upload_queue_redis_up", "Whether Redis answered this scrape")
        try:
            for name in self._queue.queue_names():
                waiting = self._queue.queue(name)
                depth.add_metric([name], waiting.count)
                oldest.add_metric([name], self._oldest_age(waiting.get_job_ids(0, 0)))
            jobs = self._queue.connection.hgetall(_JOBS_KEY)
            durations = {
                kind: self._queue.connection.hgetall(_DURATION_KEY.format(kind=kind)) for kind in (IMAGE, PDF)
            }
        except RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield from (depth, oldest, up)
        yield self._job_counts(jobs)
        yield self._job_durations(durations)

    def _oldest_age(self, job_ids: list[str]) -> float:
        if not job_ids:
            return 0.0
        job = Job.fetch(job_ids[0], connection=self._queue.connection, serializer=SERIALIZER)
        if job.enqueued_at is None:
            return 0.0
        return max(time.time() - job.enqueued_at.timestamp(), 0.0)

    @staticmethod
    def _job_counts(raw: dict[bytes, bytes]) -> CounterMetricFamily:
        family = CounterMetricFamily(
            "upload_jobs", "Processing jobs by kind, outcome and error code", labels=["kind", "outcome", "code"]
        )
        for field, value in sorted(raw.items()):
            kind, outcome, code = field.decode().split("|", 2)
            family.add_metric([kind, outcome, code], int(value))
        return family

    @staticmethod
    def _job_durations(raw: dict[str, dict[bytes, bytes]]) -> HistogramMetricFamily:
        family = HistogramMetricFamily("upload_job_duration_seconds", "Processing job duration", labels=["kind"])
        for kind, fields in raw.items():
            values = {k.decode(): v for k, v in fields.items()}
            buckets = [(repr(float(b)), float(values.get(repr(float(b)), 0))) for b in JOB_BUCKETS]
            buckets.append(("+Inf", float(values.get("count", 0))))
            family.add_metric([kind], buckets, sum_value=float(values.get("sum", 0)))
        return family


# --- webhooks -----------------------------------------------------------------------------

_WEBHOOKS_KEY = "upload:metrics:webhooks"  # field: outcome → count
WEBHOOK_OUTCOMES = ("delivered", "retry", "dead")


def record_webhook_outcome(connection: Redis, outcome: str) -> None:
    """One delivery attempt's outcome (``delivered``, ``retry``, ``dead``), from any dispatcher."""
    connection.hincrby(_WEBHOOKS_KEY, outcome, 1)


class WebhookCollector(Collector):
    """Delivery outcomes (from Redis) and, from the DB at scrape time, the age of the oldest
    pending delivery and how many are pending and dead (delivered ones are not counted: that
    table only grows until pruned, and the outcome counter says it)."""

    def __init__(self, connection: Redis, backlog: Callable[[], tuple[float, dict[str, int]]]) -> None:
        self._connection = connection
        self._backlog = backlog

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        outcomes = CounterMetricFamily(
            "upload_webhook_deliveries", "Webhook delivery attempts by outcome (delivered, retry, dead)",
            labels=["outcome"],
        )
        try:
            raw = {k.decode(): int(v) for k, v in self._connection.hgetall(_WEBHOOKS_KEY).items()}
        except RedisError:
            raw = None
        if raw is not None:
            for outcome in sorted(set(WEBHOOK_OUTCOMES) | set(raw)):
                outcomes.add_metric([outcome], raw.get(outcome, 0))
            yield outcomes
        try:
            oldest_age, counts = self._backlog()
        except Exception:  # noqa: BLE001 - a DB outage shows as missing series, not a failed scrape
            return
        age = GaugeMetricFamily(
            "upload_webhook_oldest_pending_age_seconds", "Age of the oldest webhook delivery not yet delivered"
        )
        age.add_metric([], oldest_age)
        yield age
        state = GaugeMetricFamily("upload_webhook_deliveries_by_status", "Webhook deliveries now in each status",
                                  labels=["status"])
        for status in ("pending", "dead"):
            state.add_metric([status], counts.get(status, 0))
        yield state
