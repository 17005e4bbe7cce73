"""``ingest-small``: many small uploads at once, through nginx, on SQLite and on PostgreSQL,
next to the S3 limit and the durable template, in one run.

Per database kind (SQLite file, PostgreSQL database made for the run) two servers run at once,
each behind its own nginx rendered from ours' settings (``upload_service.nginxconf``) with the
rate and connection limits raised (``servers.BENCH_NGINX_LIMITS``), each with N API processes:

- **ours**: ``upload-service serve --workers N``: the full durable path (S3 + DB row + audit
  event + RQ enqueue) before the ``202``;
- **durable template**: ``bench/template_app.py`` under ``uvicorn --workers N``.

And, once for both database kinds:

- **S3 limit**: boto3 ``put_object`` of the same bytes from as many threads as uploads in
  flight, straight to the same SeaweedFS (one client, a connection per thread): the ceiling of
  any accept path that stores the bytes there;
- **naive UploadFile**: ``bench/naive_app.py``, one uvicorn process, no nginx (for reference).

Bodies: noise PNGs of 100 KB and 20 KiB as one multipart part. Each burst is one warm-up request
per connection, then ``total`` uploads with ``concurrency`` in flight (``bench/loadgen.py``).
Rounds go round-robin over every server and body, so other load on the machine falls on all
alike; each figure is the median of the rounds, with min-max beside it. No worker consumes the
queue: Redis is flushed after each burst so the admission check's queue depth stays low.

CPU per upload (``bench/procstat.py``), in ms, per process kind: the API (supervisor and all
its workers), nginx (master and workers), SeaweedFS, Redis and, for PostgreSQL, the backends
connected to the server's own database (SQLite runs inside the API processes). For the S3
limit: SeaweedFS and boto3 in the bench process.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench import loadgen, payloads
from bench.payloads import Body
from bench.procstat import Meter, PostgresMeter, ProcessMeter, TreeMeter, wait_for_quiet
from bench.report import Row
from bench.servers import BenchStack, Target, postgres_reachable

_OK = (201, 202)
#: The bodies: label -> PNG size in bytes.
SIZES = {"100 KB": 100_000, "20 KiB": 20 * 1024}
DATABASES = ("sqlite", "postgresql")
PROCESS_KINDS = ("API", "nginx", "S3 server", "DB", "Redis")


def _log(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


@dataclass
class Burst:
    latencies: list[float]
    wall: float
    failures: int
    cpu: dict[str, float] = field(default_factory=dict)  # process kind -> CPU seconds
    backends_started: int = 0  # PostgreSQL backends that started during the run

    @property
    def rate(self) -> float:
        """Successful uploads per second (a failed one is in ``failures`` and the row's note)."""
        return (len(self.latencies) - self.failures) / self.wall

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def cpu_ms(self, kind: str) -> float:
        return self.cpu[kind] / len(self.latencies) * 1000


def _metered(meters: dict[str, Meter], run: Callable[[], Burst]) -> Burst:
    # The previous burst's leftovers (SeaweedFS digesting 1,000 objects and their deletion, a
    # database's background work) would fall on this one's meters and throughput.
    wait_for_quiet()
    for meter in meters.values():
        meter.start()
    burst = run()
    burst.cpu = {kind: meter.stop() for kind, meter in meters.items()}
    for kind, meter in meters.items():
        if isinstance(meter, PostgresMeter):
            burst.cpu[f"{kind} (whole server)"] = meter.server_seconds
            burst.backends_started = meter.backends_started
    return burst


def http_burst(target: Target, body: Body, total: int, concurrency: int, meters: dict[str, Meter]) -> Burst:
    headers = {**target.headers, "Content-Type": body.content_type}
    request = loadgen.build_request(target.url + target.multipart_path, headers, body.content)
    warm = loadgen.run(loadgen.hammer(target.url, request, concurrency, concurrency))
    if warm.failures(_OK) == concurrency:
        raise RuntimeError(f"{target.name}: every warm-up upload failed: {warm.statuses}\n{target.log_tail()}")

    def run() -> Burst:
        results = loadgen.run(loadgen.hammer(target.url, request, total, concurrency))
        return Burst(results.latencies, results.wall, results.failures(_OK))

    burst = _metered(meters, run)
    failed = warm.failures(_OK) + burst.failures
    if failed:  # figures are still printed, with the failures in the row's note
        _log(f"{target.name}: {failed} uploads failed (warm-up {warm.statuses}); the server's last errors:")
        for line in _error_lines(target):
            _log(f"    {line}")
    return burst


def _error_lines(target: Target, count: int = 3) -> list[str]:
    lines = [line for line in target.log_tail(2000).splitlines() if '"level": "error"' in line or '"warning"' in line]
    return [line[:400] for line in lines[-count:]]


class S3Limit:
    """boto3 ``put_object`` from ``concurrency`` threads through one client straight to the
    bench's SeaweedFS; objects are deleted after each burst (not timed)."""

    def __init__(self, stack: BenchStack, concurrency: int) -> None:
        import boto3
        from botocore.config import Config

        from upload_service.storage import build_object_store

        assert stack.s3 is not None
        settings = stack.s3.settings()
        build_object_store(settings).ensure_buckets()
        self.bucket = settings.originals_bucket
        self.concurrency = concurrency
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=stack.s3.endpoint_url, region_name="us-east-1",
            aws_access_key_id=stack.s3.access_key, aws_secret_access_key=stack.s3.secret_key,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                          max_pool_connections=concurrency),
        )
        self.meters: dict[str, Meter] = {"S3 server": TreeMeter(stack.s3.process.pid or 0), "client": ProcessMeter()}

    def _puts(self, content: bytes, total: int, prefix: str) -> Burst:
        numbers = itertools.count()
        lock = threading.Lock()
        latencies: list[float] = []
        failures = 0

        def worker() -> None:
            nonlocal failures
            while True:
                with lock:
                    number = next(numbers)
                if number >= total:
                    return
                started = time.perf_counter()
                failed = False
                try:
                    self.client.put_object(Bucket=self.bucket, Key=f"{prefix}/{number}", Body=content,
                                           ContentType="image/png")
                except Exception:  # noqa: BLE001 - counted, like a failed upload
                    failed = True
                done = time.perf_counter() - started
                with lock:
                    latencies.append(done)
                    failures += failed

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(self.concurrency)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return Burst(latencies, time.perf_counter() - started, failures)

    def burst(self, content: bytes, total: int) -> Burst:
        self._puts(content, self.concurrency, "warm")  # connections, first-use imports
        burst = _metered(self.meters, lambda: self._puts(content, total, "limit"))
        self._empty()
        return burst

    def _empty(self) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})


@dataclass
class Pair:
    """Ours and the template on one database kind, each behind its own nginx."""

    database: str
    ours: Target
    template: Target
    meters: dict[str, dict[str, Meter]]


def _meters(stack: BenchStack, api: Target, front: Target, database: str) -> dict[str, Meter]:
    assert stack.s3 is not None and stack.redis is not None
    meters: dict[str, Meter] = {
        "API": TreeMeter(api.memory_pid),
        "nginx": TreeMeter(front.memory_pid),
        "S3 server": TreeMeter(stack.s3.process.pid or 0),
        "Redis": TreeMeter(stack.redis.process.pid or 0),
    }
    if database == "postgresql":
        meters["DB"] = PostgresMeter(api.database_url)
    return meters


def run_small(
    stack: BenchStack, quick: bool, *, workers: int, databases: tuple[str, ...] = DATABASES, concurrency: int = 32,
) -> list[Row]:
    total, rounds = (200, 2) if quick else (1000, 3)
    rows: list[Row] = []
    skipped = postgres_reachable() if "postgresql" in databases else None
    if skipped:
        databases = tuple(d for d in databases if d != "postgresql")
        rows.append(Row("ingest-small", "postgresql: skipped", float("nan"), "", note=skipped))
    bodies = {label: payloads.multipart(payloads.noise_png_of_size(size), "small.png", "image/png")
              for label, size in SIZES.items()}
    contents = {label: payloads.noise_png_of_size(size) for label, size in SIZES.items()}
    s3_limit = S3Limit(stack, concurrency)
    pg_meters: list[PostgresMeter] = []
    with contextlib.ExitStack() as running:
        pairs: list[Pair] = []
        for database in databases:
            _log(f"starting ours and the durable template on {database}, {workers} API processes each, behind nginx")
            ours_url, template_url = stack.database(database, "ours"), stack.database(database, "template")
            ours = running.enter_context(stack.ours("s3", database_url=ours_url, workers=workers))
            assert ours.settings is not None
            template = running.enter_context(stack.template(template_url, ours.settings, workers))
            ours_front = running.enter_context(stack.front(ours.settings, ours))
            template_front = running.enter_context(stack.front(ours.settings, template))
            meters = {"ours": _meters(stack, ours, ours_front, database),
                      "template": _meters(stack, template, template_front, database)}
            pg_meters += [m for group in meters.values() for m in group.values() if isinstance(m, PostgresMeter)]
            pairs.append(Pair(database, ours_front, template_front, meters))
        running.callback(lambda: [m.close() for m in pg_meters])
        naive = running.enter_context(stack.naive())
        naive_meters: dict[str, Meter] = {"API": TreeMeter(naive.memory_pid)}
        results: dict[tuple[str, str], list[Burst]] = {}

        def record(key: tuple[str, str], burst: Burst) -> None:
            results.setdefault(key, []).append(burst)
            stack.flush_queue()  # no worker runs: keep admission's queue-depth check low

        for round_number in range(rounds):
            _log(f"round {round_number + 1} of {rounds}: {total} uploads per server and body, {concurrency} in flight")
            for label, body in bodies.items():
                record((label, "S3 limit"), s3_limit.burst(contents[label], total))
                for pair in pairs:
                    for name, target in (("ours", pair.ours), ("template", pair.template)):
                        record((label, f"{name} {pair.database}"),
                               http_burst(target, body, total, concurrency, pair.meters[name]))
                record((label, "naive"), http_burst(naive, body, total, concurrency, naive_meters))
    for label in SIZES:
        for database in databases:
            rows += _rows(results, label, database, total, concurrency, workers)
    return rows


def _rows(
    results: dict[tuple[str, str], list[Burst]], label: str, database: str, total: int, concurrency: int, workers: int,
) -> list[Row]:
    ours, template = results[(label, f"ours {database}")], results[(label, f"template {database}")]
    limit, naive = results[(label, "S3 limit")], results[(label, "naive")]
    name = f"small {label} PNG, {database}"
    failed = sum(b.failures for b in ours)
    rates = " ".join(f"{b.rate:.0f}" for b in ours)
    rows = [
        Row.of_runs(name, "ours uploads/s", [b.rate for b in ours], "1/s", "S3 limit puts/s",
                    [b.rate for b in limit], note=f"target >= 0.7x; {total} x {concurrency} in flight; runs: {rates}"
                    + (f"; {failed} FAILED" if failed else "") + _failed(limit, "S3 limit: ")),
        Row.of_runs(name, "ours uploads/s", [b.rate for b in ours], "1/s", "durable template",
                    [b.rate for b in template], note=f"target >= 2x; {workers} API processes each, both behind nginx"
                    + _failed(template)),
        Row.of_runs(name, "ours uploads/s", [b.rate for b in ours], "1/s", "naive UploadFile",
                    [b.rate for b in naive], note="naive: 1 process, no nginx, writes to a local file" + _failed(naive)),
    ]
    for q, tag in ((0.5, "p50"), (0.99, "p99")):
        for anchor, runs in (("durable template", template), ("S3 limit (one put)", limit)):
            rows.append(Row.of_runs(name, f"ours {tag} latency", [b.percentile_ms(q) for b in ours], "ms", anchor,
                                    [b.percentile_ms(q) for b in runs], higher_is_better=False))
    for kind in PROCESS_KINDS:
        if kind not in ours[0].cpu:
            rows.append(Row(name, f"ours {kind} CPU/upload", float("nan"), "ms", note="SQLite: inside the API processes"))
            continue
        note = "target <= 3 ms; all API processes" if kind == "API" else ""
        if kind == "DB":
            whole = (f"{_median(ours, 'DB (whole server)'):.2f}", f"{_median(template, 'DB (whole server)'):.2f}")
            started = (max(b.backends_started for b in ours), max(b.backends_started for b in template))
            note = (f"backends of its own database; whole PostgreSQL tree (shared): {whole[0]} vs {whole[1]} ms; "
                    f"backends started: {started[0]} vs {started[1]}")
        rows.append(Row.of_runs(name, f"ours {kind} CPU/upload", [b.cpu_ms(kind) for b in ours], "ms",
                                "durable template", [b.cpu_ms(kind) for b in template], higher_is_better=False,
                                note=note))
        if kind == "S3 server":
            rows.append(Row.of_runs(name, "ours S3 server CPU/upload", [b.cpu_ms(kind) for b in ours], "ms",
                                    "S3 limit (per put)", [b.cpu_ms(kind) for b in limit], higher_is_better=False))
    kinds = [k for k in PROCESS_KINDS if k in ours[0].cpu]
    rows.append(Row.of_runs(name, "ours CPU/upload, all processes", [sum(b.cpu_ms(k) for k in kinds) for b in ours],
                            "ms", "durable template", [sum(b.cpu_ms(k) for k in kinds) for b in template],
                            higher_is_better=False, note=" + ".join(kinds) + " (not the load generator)"))
    own = [k for k in kinds if k != "S3 server"]
    rows.append(Row.of_runs(name, "ours CPU/upload, all but the S3 server", [sum(b.cpu_ms(k) for k in own) for b in ours],
                            "ms", "durable template", [sum(b.cpu_ms(k) for k in own) for b in template],
                            higher_is_better=False,
                            note="the accept path's own cost: the S3 server's work on the same PUT left out"))
    rows.append(Row.of_runs(name, "S3 limit: boto3 client CPU/put", [b.cpu_ms("client") for b in limit], "ms",
                            note=f"for reference; naive API CPU/upload {_median(naive, 'API'):.2f} ms"))
    return rows


def _failed(bursts: list[Burst], whose: str = "") -> str:
    failed = sum(b.failures for b in bursts)
    return f"; {whose}{failed} FAILED" if failed else ""


def _median(bursts: list[Burst], kind: str) -> float:
    from bench.report import median

    return median([b.cpu_ms(kind) for b in bursts])
