"""``ingest-large``: one large body at a time (``ingest-small`` is ``bench/small.py``).

A 45 MiB PDF sent as a raw body and as multipart, one request at a time, to ours (S3 backend,
and local backend to show the ingest path without the S3 upload), to nginx alone writing the
body to disk, and to the naive ``UploadFile`` app; and the **S3 limit**: the same file uploaded
by boto3's ``upload_file`` (8 MiB parts, 4 in flight) straight to the same SeaweedFS,
interleaved with the others' runs. Figures: MiB/s (body size / time to the response), the share
of each request after its last body byte — seen from the sender (after its last ``send``, so
including what the socket buffers still held) and, for ours, from the API (its own
``upload_finish_duration_seconds``: after it read the last byte) — and the server's peak RSS growth (VmHWM, reset
through ``/proc/PID/clear_refs`` before each request, minus the RSS after a warm-up upload); each
the median of the runs with min-max beside it. Full runs add one 500 MiB upload to ours (s3)
with the body limits raised, for its peak RSS growth.
"""

from __future__ import annotations

import contextlib
import http.client
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from bench import payloads
from bench.payloads import Body, MiB
from bench.procstat import wait_for_quiet
from bench.report import Row, median
from bench.servers import BenchStack, Target, peak_growth_mib, proc_kib, reset_peak_rss

LARGE_BYTES = 45 * MiB
SMALL_BYTES = 5 * MiB  # second size for ours and naive: is peak memory flat in the file size?
HUGE_BYTES = 500 * MiB  # ours alone, limits raised, full runs only: peak memory at 10x the size
_OK = (201, 202, 204)


@dataclass
class Samples:
    seconds: list[float] = field(default_factory=list)
    after_body: list[float] = field(default_factory=list)
    after_arrival: list[float] = field(default_factory=list)  # ours: the API's own figure
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
    RSS after the warm-up: memory an earlier upload left mapped counts against this one too).
    It starts once the machine is quiet: what the previous run left to do is not this one's."""
    wait_for_quiet()
    reset_peak_rss(target.memory_pid)
    finished = _finish_seconds(target)
    sent = _post(target, path, body)
    into.seconds.append(sent.seconds)
    into.after_body.append(sent.after_body)
    if finished is not None:
        into.after_arrival.append(_finished_sum(target) - finished)
    into.growth_mib.append(peak_growth_mib(target.memory_pid, settled_kib))
    target.forget(sent.response, body.size)


def _finish_seconds(target: Target) -> float | None:
    """Ours (None for the others): the API's ``upload_finish_duration_seconds`` sum so far (one
    request at a time, so the difference around a request is its time after its last body byte)."""
    return None if target.settings is None else _finished_sum(target)


def _finished_sum(target: Target) -> float:
    with urllib.request.urlopen(target.url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name == "upload_finish_duration_seconds"
               for sample in family.samples if sample.name == "upload_finish_duration_seconds_sum")


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
        wait_for_quiet()  # (as ``_measure_once``)
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
    machine falls on all of them alike; each run starts once the machine is quiet, so the work a
    run leaves behind (SeaweedFS's own after a 45 MiB object, its deletion) does not land on the
    next server's run. The 5 MiB runs come first: they must not inherit the memory a 45 MiB
    upload left mapped."""
    runs = 2 if quick else 9
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
    rows = _large_rows(results, big["raw"].size, limit_samples)
    if not quick:
        del big, small  # a few hundred MiB less held while the 500 MiB body is built
        rows += run_huge(stack)
    return rows


def _large_rows(results: dict[str, dict[str, Samples]], size: int, s3_limit: Samples) -> list[Row]:
    name = f"ingest {round(size / MiB)} MiB"
    rows: list[Row] = []
    limit = [size / MiB / s for s in s3_limit.seconds]
    for mode in ("raw", "multipart"):
        speed = {key: [size / MiB / s for s in results[key][mode].seconds] for key in results}
        rows.append(Row.of_runs(name, f"{mode}: ours (s3) MiB/s", speed["ours (s3)"], "MiB/s", "S3 limit (boto3)", limit,
                                note="target >= 0.9x"))
        for key in ("ours (s3)", "ours (local)"):
            note = "ingest path without S3" if key == "ours (local)" else ""
            rows += [
                Row.of_runs(name, f"{mode}: {key} MiB/s", speed[key], "MiB/s", "nginx to disk", speed["nginx"],
                            note=note + ("; target >= 0.6x" if key == "ours (local)" else "")),
                Row.of_runs(name, f"{mode}: {key} MiB/s", speed[key], "MiB/s", "naive UploadFile", speed["naive"]),
            ]
        for key in results:
            samples = results[key][mode]
            shares = [after / whole * 100 for after, whole in zip(samples.after_body, samples.seconds, strict=True)]
            rows.append(Row.of_runs(name, f"{mode}: {key}, time after the body was sent", shares, "%",
                                    note=f"of {median(samples.seconds):.2f} s per request; from the sender's last send"))
            if samples.after_arrival:
                shares = [after / whole * 100
                          for after, whole in zip(samples.after_arrival, samples.seconds, strict=True)]
                target = "; target <= 15 %" if key == "ours (s3)" else ""
                rows.append(Row.of_runs(name, f"{mode}: {key}, time after the body arrived", shares, "%",
                                        note=f"from the API's last body byte read (its finish metric){target}"))
    for mode in ("small", "raw", "multipart"):
        growth = {key: results[key][mode].growth_mib for key in results}
        label = f"raw {SMALL_BYTES // MiB} MiB" if mode == "small" else f"{mode} {round(size / MiB)} MiB"
        for key in ("ours (s3)", "ours (local)"):
            rows.append(Row.of_runs("ingest, memory", f"{label}: {key} peak RSS growth", growth[key], "MiB",
                                    "naive UploadFile", growth["naive"], higher_is_better=False))
        rows.append(Row.of_runs("ingest, memory", f"{label}: nginx worker peak RSS growth", growth["nginx"], "MiB",
                                note="for reference (the body goes to a file)"))
    return rows


def run_huge(stack: BenchStack) -> list[Row]:
    """One 500 MiB raw upload to ours (s3) with the body limits raised: peak RSS growth of the API
    process (VmHWM over its RSS after a warm-up), which must not grow with the file."""
    limit = HUGE_BYTES + 64 * MiB
    body = payloads.raw(payloads.pdf_of_size(HUGE_BYTES), "application/pdf")
    warm = payloads.raw(payloads.pdf_of_size(64 * 1024), "application/pdf")
    with stack.ours("s3", limits={"max_body_bytes": limit, "max_pdf_bytes": limit}) as target:
        target.forget(_post(target, target.raw_path, warm).response, warm.size)
        settled = proc_kib(target.memory_pid, "VmRSS")
        samples = Samples()
        _measure_once(target, target.raw_path, body, settled, samples)
    stack.flush_queue()
    return [
        Row("ingest, memory", f"raw {HUGE_BYTES // MiB} MiB: ours (s3) peak RSS growth", samples.growth_mib[0], "MiB",
            note=f"target <= 32 MiB; one run, limits raised; {body.size / MiB / samples.seconds[0]:.0f} MiB/s"),
    ]
