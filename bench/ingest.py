"""Ingest benchmarks: one large body at a time, and many small uploads at once.

(a) ``large``: a 45 MiB PDF sent as a raw body and as multipart, one request at a time, to ours
    (S3 backend, and local backend to show the ingest path without the S3 upload), to nginx
    alone writing the body to disk, and to the naive ``UploadFile`` app; and the **S3 limit**:
    the same file uploaded by boto3's ``upload_file`` (8 MiB parts, 4 in flight) straight to
    the same SeaweedFS, interleaved with the others' runs. Figures: MiB/s (body
    size / time to the response) and the server's peak RSS growth (VmHWM, reset through
    ``/proc/PID/clear_refs`` before each request, minus the RSS after a warm-up upload).
(b) ``small``: many 20 KiB PNG uploads (multipart) with a fixed number in flight, from a
    minimal keep-alive client (``bench/loadgen.py``): requests/s, p50/p99 latency and the
    server's CPU per upload, ours (S3 and local backends) vs the naive app. The client shares
    the cores with the servers, so requests/s is a floor; CPU per upload is not affected.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench import loadgen, payloads
from bench.payloads import MiB, Body
from bench.report import Row, median
from bench.servers import BenchStack, Target, peak_growth_mib, proc_kib, reset_peak_rss

LARGE_BYTES = 45 * MiB
SMALL_BYTES = 5 * MiB  # second size for ours and naive: is peak memory flat in the file size?
_OK = (201, 202, 204)
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Samples:
    seconds: list[float] = field(default_factory=list)
    after_body: list[float] = field(default_factory=list)
    growth_mib: list[float] = field(default_factory=list)

    def mib_per_s(self, size: int) -> float:
        return size / MiB / median(self.seconds)


@dataclass(frozen=True)
class Sent:
    response: bytes
    seconds: float  # first header byte sent .. response read
    after_body: float  # last body byte handed to the kernel .. response read


def _post(target: Target, path: str, body: Body) -> Sent:
    """POST over a fresh connection with ``http.client`` (the body goes out in one ``sendall``),
    timing the whole request and the part after the last body byte was sent: the server's work
    once the body is in (fsync, storing, DB, queue), plus reading what the socket buffers
    still held (a few MiB at most)."""
    url = urlsplit(target.url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=120)
    try:
        connection.connect()
        connection.putrequest("POST", path, skip_accept_encoding=True)
        for name, value in {**target.headers, "Content-Type": body.content_type}.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(body.size))
        started = time.perf_counter()
        connection.endheaders()
        connection.send(body.content)
        sent = time.perf_counter()
        response = connection.getresponse()
        data = response.read()
        done = time.perf_counter()
    finally:
        connection.close()
    if response.status not in _OK:
        raise RuntimeError(f"{target.name}: {response.status} {data[:300]!r}")
    return Sent(data, done - started, done - sent)


def _measure_once(target: Target, path: str, body: Body, settled_kib: int, into: Samples) -> None:
    """One upload: its times, and how far the peak RSS rose above the server's settled RSS (the
    RSS after the warm-up: memory an earlier upload left mapped counts against this one too)."""
    reset_peak_rss(target.memory_pid)
    sent = _post(target, path, body)
    into.seconds.append(sent.seconds)
    into.after_body.append(sent.after_body)
    into.growth_mib.append(peak_growth_mib(target.memory_pid, settled_kib))
    target.forget(sent.response, body.size)


class S3Limit:
    """How fast the bench's SeaweedFS takes the file from boto3 directly: ``upload_file``
    (multipart, 8 MiB parts, 4 in flight), the ceiling of any accept path that stores it there."""

    def __init__(self, stack: BenchStack, content: bytes) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        from upload_service.storage import build_object_store

        assert stack.s3 is not None
        settings = stack.s3.settings()
        build_object_store(settings).ensure_buckets()
        self.bucket = settings.originals_bucket
        self.path = stack.root / "s3-limit.bin"
        self.path.write_bytes(content)
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=stack.s3.endpoint_url, region_name="us-east-1",
            aws_access_key_id=stack.s3.access_key, aws_secret_access_key=stack.s3.secret_key,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )
        self.config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4)

    def measure_once(self, into: Samples) -> None:
        started = time.perf_counter()
        self.client.upload_file(str(self.path), self.bucket, "limit/object", Config=self.config)
        into.seconds.append(time.perf_counter() - started)
        self.client.delete_object(Bucket=self.bucket, Key="limit/object")


def _bodies(size: int) -> dict[str, Body]:
    pdf = payloads.pdf_of_size(size)
    return {
        "raw": payloads.raw(pdf, "application/pdf"),
        "multipart": payloads.multipart(pdf, "big.pdf", "application/pdf"),
    }


def _servers(stack: BenchStack, with_nginx: bool) -> dict[str, Callable[[], contextlib.AbstractContextManager[Target]]]:
    servers: dict[str, Callable[[], contextlib.AbstractContextManager[Target]]] = {
        "ours (s3)": lambda: stack.ours("s3"),
        "ours (local)": lambda: stack.ours("local"),
        "naive": stack.naive,
    }
    if with_nginx:
        servers["nginx"] = stack.nginx_sink
    return servers


def run_large(stack: BenchStack, quick: bool) -> list[Row]:
    """Every server runs at once and the runs go round-robin, so load from elsewhere on the
    machine falls on all of them alike. The 5 MiB runs come first: they must not inherit the
    memory a 45 MiB upload left mapped."""
    runs = 2 if quick else 5
    big, small = _bodies(LARGE_BYTES), _bodies(SMALL_BYTES)
    warm = payloads.raw(payloads.pdf_of_size(64 * 1024), "application/pdf")
    s3_limit, limit_samples = S3Limit(stack, big["raw"].content), Samples()
    s3_limit.measure_once(Samples())  # warm-up: connections, first-use imports
    with contextlib.ExitStack() as running:
        targets = {key: running.enter_context(start()) for key, start in _servers(stack, with_nginx=True).items()}
        settled: dict[str, int] = {}
        for key, target in targets.items():
            target.forget(_post(target, target.raw_path, warm).response, warm.size)  # lazy clients, libmagic
            settled[key] = proc_kib(target.memory_pid, "VmRSS")
        results = {key: {"small": Samples(), "raw": Samples(), "multipart": Samples()} for key in targets}
        for mode, bodies in (("small", small), ("raw", big), ("multipart", big)):
            body = bodies["multipart" if mode == "multipart" else "raw"]
            for _ in range(runs):
                for key, target in targets.items():
                    path = target.multipart_path if mode == "multipart" else target.raw_path
                    _measure_once(target, path, body, settled[key], results[key][mode])
                if mode != "small":
                    s3_limit.measure_once(limit_samples)
    stack.flush_queue()
    return _large_rows(results, big["raw"].size, limit_samples)


def _large_rows(results: dict[str, dict[str, Samples]], size: int, s3_limit: Samples) -> list[Row]:
    name = f"ingest {round(size / MiB)} MiB"
    rows: list[Row] = []
    limit = s3_limit.mib_per_s(size)
    limit_runs = " ".join(f"{size / MiB / s:.0f}" for s in s3_limit.seconds)
    for mode in ("raw", "multipart"):
        speed = {key: results[key][mode].mib_per_s(size) for key in results}
        runs = " ".join(f"{size / MiB / s:.0f}" for s in results["ours (local)"][mode].seconds)
        s3_runs = " ".join(f"{size / MiB / s:.0f}" for s in results["ours (s3)"][mode].seconds)
        rows.append(Row(name, f"{mode}: ours (s3) MiB/s", speed["ours (s3)"], "MiB/s", "S3 limit (boto3)", limit,
                        note=f"runs: {s3_runs}; S3 limit runs: {limit_runs}"))
        for key in ("ours (s3)", "ours (local)"):
            note = f"ingest path without S3; runs: {runs}" if key == "ours (local)" else ""
            rows += [
                Row(name, f"{mode}: {key} MiB/s", speed[key], "MiB/s", "nginx to disk", speed["nginx"], note=note),
                Row(name, f"{mode}: {key} MiB/s", speed[key], "MiB/s", "naive UploadFile", speed["naive"]),
            ]
        for key in results:
            whole, after = median(results[key][mode].seconds), median(results[key][mode].after_body)
            rows.append(Row(name, f"{mode}: {key}, time after the body was sent", after, "s",
                            note=f"{after / whole:.0%} of {whole:.2f} s"))
    for mode in ("small", "raw", "multipart"):
        growth = {key: median(results[key][mode].growth_mib) for key in results}
        label = f"raw {SMALL_BYTES // MiB} MiB" if mode == "small" else f"{mode} {round(size / MiB)} MiB"
        for key in ("ours (s3)", "ours (local)"):
            rows.append(Row("ingest, memory", f"{label}: {key} peak RSS growth", growth[key], "MiB",
                            "naive UploadFile", growth["naive"], higher_is_better=False))
        rows.append(Row("ingest, memory", f"{label}: nginx worker peak RSS growth", growth["nginx"], "MiB",
                        note="for reference (the body goes to a file)"))
    return rows


# -- many small uploads ----------------------------------------------------------------------


@dataclass
class Burst:
    results: loadgen.Results
    server_cpu: float
    growth_mib: float

    @property
    def rps(self) -> float:
        return len(self.results.latencies) / self.results.wall

    def percentile(self, q: float) -> float:
        ordered = sorted(self.results.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


def _burst(target: Target, body: Body, total: int, concurrency: int) -> Burst:
    """One warm-up upload per connection, then ``total`` uploads with ``concurrency`` in flight."""
    headers = {**target.headers, "Content-Type": body.content_type}
    request = loadgen.build_request(target.url + target.multipart_path, headers, body.content)
    loadgen.run(loadgen.hammer(target.url, request, concurrency, concurrency))
    baseline, cpu = reset_peak_rss(target.memory_pid), _cpu_seconds(target.memory_pid)
    results = loadgen.run(loadgen.hammer(target.url, request, total, concurrency))
    cpu = _cpu_seconds(target.memory_pid) - cpu
    return Burst(results, cpu, peak_growth_mib(target.memory_pid, baseline))


def run_small(stack: BenchStack, quick: bool, concurrency: int = 32) -> list[Row]:
    """Rounds go round-robin over the servers, all running at once (see ``run_large``)."""
    total, rounds = (300, 1) if quick else (2000, 3)
    png = payloads.noise_png()
    body = payloads.multipart(png, "small.png", "image/png")
    with contextlib.ExitStack() as running:
        targets = {key: running.enter_context(start()) for key, start in _servers(stack, with_nginx=False).items()}
        bursts: dict[str, list[Burst]] = {key: [] for key in targets}
        for _ in range(rounds):
            for key, target in targets.items():
                bursts[key].append(_burst(target, body, total, concurrency))
                stack.flush_queue()  # no worker runs: keep admission's queue-depth check from tripping
    return _small_rows(bursts, f"{total} x {len(png) / 1024:.0f} KiB PNG, {concurrency} in flight", total)


def _small_rows(bursts: dict[str, list[Burst]], name: str, total: int) -> list[Row]:
    naive = bursts["naive"]
    rows: list[Row] = []

    def pair(key: str, figure: str, unit: str, of: Callable[[Burst], float], note: str = "") -> Row:
        higher = unit == "req/s"
        return Row(name, f"{key} {figure}", median([of(b) for b in bursts[key]]), unit, "naive UploadFile",
                   median([of(b) for b in naive]), higher_is_better=higher, note=note)

    for key in ("ours (s3)", "ours (local)"):
        failed = sum(b.results.failures(_OK) for b in bursts[key])
        runs = " ".join(f"{b.rps:.0f}" for b in bursts[key])
        rows += [
            pair(key, "requests/s", "req/s", lambda b: b.rps, f"{failed} failed" if failed else f"runs: {runs}"),
            pair(key, "p50 latency", "ms", lambda b: b.percentile(0.5) * 1000),
            pair(key, "p99 latency", "ms", lambda b: b.percentile(0.99) * 1000),
            pair(key, "server CPU per upload", "ms", lambda b: b.server_cpu / total * 1000,
                 "API process only (not SeaweedFS, Redis)"),
            pair(key, "peak RSS growth", "MiB", lambda b: b.growth_mib),
        ]
    naive_failed = sum(b.results.failures(_OK) for b in naive)
    if naive_failed:
        rows.append(Row(name, "naive failures", naive_failed, "requests"))
    return rows
