"""``upload-service serve --workers 2``: ``/metrics`` counts every request exactly once whichever
process answers the request and whichever answers the scrape; a worker process killed with
SIGKILL loses none of its counts and leaves no upload "in flight"; the series read at scrape
time appear once; both processes replaying one audit journal store each event exactly once."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from tests import rawhttp as raw
from tests import samples
from tests.fixtures.app import Client, LiveServer, make_settings, start_api
from tests.fixtures.audit import make_event
from tests.fixtures.services import RedisService, S3Service
from upload_service.audit import verify_chain
from upload_service.audit.journal import Journal
from upload_service.db.audit_models import AuditEventRow
from upload_service.storage import build_object_store

WORKERS = 2
JOURNALED = 300
Key = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class Served:
    """The server, its supervisor's pid, and the journaled events it found at start."""

    server: LiveServer
    journal_tenant: str
    journal_ids: set[str]

    @property
    def url(self) -> str:
        return self.server.url

    def workers(self) -> list[int]:
        """The supervisor's API processes (its multiprocessing resource tracker is not one)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                cmdline = (stat.parent / "cmdline").read_bytes()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self.server.process.pid and b"spawn_main" in cmdline:
                found.append(int(stat.parent.name))
        return sorted(found)

    def metrics_dir(self) -> Path:
        environ = Path(f"/proc/{self.workers()[0]}/environ").read_bytes().split(b"\0")
        value = next(v for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR="))
        return Path(value.split(b"=", 1)[1].decode())

    def process_values(self, pid: int, kind: str) -> dict[str, float]:
        """One process's own file (``counter``, ``gauge_livesum``): metric sample → value."""
        path = self.metrics_dir() / f"{kind}_{pid}.db"
        if not path.exists():
            return {}
        totals: Counter[str] = Counter()
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            totals[json.loads(key)[1]] += value
        return dict(totals)

    def wait_for_workers(self, count: int = WORKERS, timeout: float = 60) -> list[int]:
        """Until ``count`` API processes have built their metrics (in their lifespan)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.workers()
            if len(pids) == count and all((self.metrics_dir() / f"counter_{pid}.db").exists() for pid in pids):
                return pids
            time.sleep(0.1)
        raise AssertionError(f"{count} API processes not ready: {self.workers()}")

    def scrape(self) -> dict[Key, float]:
        """Every sample of one scrape; a sample exported twice fails the test."""
        response = httpx.get(self.url + "/metrics", timeout=30)
        assert response.status_code == 200
        samples_seen: dict[Key, float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                assert key not in samples_seen, f"{key} exported twice"
                samples_seen[key] = sample.value
        return samples_seen


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, live_server: LiveServer, redis_service: RedisService, s3_service: S3Service
) -> Iterator[Served]:
    redis_service.ensure_running()
    s3_service.ensure_running()
    workdir = tmp_path_factory.mktemp("api-workers")
    settings = make_settings(workdir, live_server.settings.database.url, redis_service.url, s3_service)
    settings.prepare_dirs()
    # A journal left by a DB outage: both processes replay it at start-up.
    tenant = f"jr{uuid.uuid4().hex[:10]}"
    events = [make_event(tenant) for _ in range(JOURNALED)]
    Journal(settings.audit.journal_path).append(event.to_json() for event in events)
    process, url = start_api(settings, workdir, workers=WORKERS)
    server = LiveServer(
        url=url, settings=settings, process=process, sessions=live_server.sessions,
        store=build_object_store(settings.storage), log_path=process.log_path,
    )
    result = Served(server, tenant, {event.event_id for event in events})
    try:
        result.wait_for_workers()
        yield result
    finally:
        metrics_dir = result.metrics_dir() if result.workers() else None
        process.stop()
        if metrics_dir is not None:
            assert not metrics_dir.exists(), "serve left its metrics directory behind"


def value(scrape: dict[Key, float], name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def total(scrape: dict[Key, float], name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in scrape.items() if n == name and set(labels.items()) <= set(ls))


def until_both_processes_answered(served: Served, batch: Callable[[], None], rounds: int = 6) -> int:
    """Run ``batch`` until every API process counted uploads; returns how many batches ran."""
    for done in range(1, rounds + 1):
        batch()
        counts = [served.process_values(pid, "counter").get("upload_uploads_total", 0) for pid in served.workers()]
        if len(counts) == WORKERS and all(counts):
            return done
    raise AssertionError(f"the kernel gave every connection to one process: {counts}")


def test_every_request_is_counted_once_whichever_process_answers(served: Served) -> None:
    client: Client = served.server.client()
    before = served.scrape()
    accepted: list[str] = []
    sent = Counter[str]()

    def batch() -> None:
        def accept(i: int) -> None:
            response = client.upload(samples.png_bytes(8 + i % 5, 8), f"a{i}.png")
            assert response.status_code == 202, response.text
            accepted.append(response.json()["id"])
            sent["accepted"] += 1

        def reject(i: int) -> None:
            response = client.upload(samples.zip_bytes(), f"r{i}.bin", "application/octet-stream")
            assert response.status_code == 415, response.text
            sent["rejected"] += 1

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(accept, range(10)))
            list(pool.map(reject, range(6)))

        def read(upload_id: str) -> None:
            status = client.request("GET", f"/v1/uploads/{upload_id}").status_code
            sent[f"get{status}"] += 1

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(read, accepted[-10:] + [str(uuid.uuid4()) for _ in range(4)]))

    until_both_processes_answered(served, batch)
    assert sent["get200"] and sent["get404"] and set(sent) == {"accepted", "rejected", "get200", "get404"}

    scrapes = [served.scrape() for _ in range(6)]  # answered by either process
    for after in scrapes:
        def delta(name: str, **labels: str) -> float:
            return total(after, name, **labels) - total(before, name, **labels)

        assert delta("upload_uploads_total", outcome="accepted", type="image/png") == sent["accepted"]
        assert delta("upload_uploads_total", outcome="rejected", code="UNSUPPORTED_MEDIA_TYPE") == sent["rejected"]
        assert delta("upload_uploads_total") == sent["accepted"] + sent["rejected"]
        http = {"method": "POST", "route": "/v1/uploads"}
        assert delta("upload_http_requests_total", **http, status="202") == sent["accepted"]
        assert delta("upload_http_requests_total", **http, status="415") == sent["rejected"]
        read_route = {"method": "GET", "route": "/v1/uploads/{upload_id}"}
        assert delta("upload_http_requests_total", **read_route, status="200") == sent["get200"]
        assert delta("upload_http_requests_total", **read_route, status="404") == sent["get404"]
        for outcome in ("accepted", "rejected"):
            assert delta("upload_ingest_duration_seconds_count", outcome=outcome) == sent[outcome]
            assert delta("upload_ingest_duration_seconds_bucket", outcome=outcome, le="+Inf") == sent[outcome]
        assert delta("upload_received_bytes_total") >= sent["accepted"] * len(samples.png_bytes(8, 8))
        assert value(after, "upload_uploads_in_flight") == 0
        builds = [(n, ls) for (n, ls) in after if n == "upload_build_info"]
        assert len(builds) == 1 and after[builds[0]] == 1, builds
        # Read at scrape time, exported once by the process that answers: never one per process.
        assert all(not any(k == "pid" for k, _ in ls) for _, ls in after)
        assert value(after, "upload_queue_redis_up") == 1
        queues = served.server.settings.queue
        assert sorted(dict(ls)["queue"] for n, ls in after if n == "upload_queue_depth") == sorted(
            [queues.image_queue, queues.pdf_queue]
        )
        assert len([1 for n, _ in after if n == "upload_audit_journal_backlog"]) == 1
    # Each scrape is itself counted once, after it answered.
    last, first = scrapes[-1], scrapes[0]
    metrics_route = {"method": "GET", "route": "/metrics", "status": "200"}
    assert total(last, "upload_http_requests_total", **metrics_route) - total(
        first, "upload_http_requests_total", **metrics_route
    ) == len(scrapes) - 1


def test_a_killed_process_keeps_its_counts_and_drops_its_in_flight_uploads(served: Served) -> None:
    client: Client = served.server.client()

    def batch() -> None:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda i: client.upload(samples.png_bytes(), f"k{i}.png").status_code, range(10)))
        assert statuses == [202] * 10

    until_both_processes_answered(served, batch)
    with raw.connect(served.url) as sock:
        # An upload whose body stalls: one process holds it in flight.
        sock.sendall(raw.head("POST", "/v1/uploads?filename=slow.pdf", {
            "Authorization": f"Bearer {client.key}", "Content-Type": "application/pdf", "Content-Length": str(4 << 20),
        }) + b"%PDF-1.4\n" + b"\0" * 4096)
        deadline = time.monotonic() + 20
        holders: list[int] = []
        while not holders and time.monotonic() < deadline:
            holders = [p for p in served.workers() if served.process_values(p, "gauge_livesum").get("upload_uploads_in_flight")]
            time.sleep(0.05)
        assert len(holders) == 1, "no process shows the stalled upload in flight"
        victim = holders[0]
        before = served.scrape()
        assert value(before, "upload_uploads_in_flight") == 1
        victim_counted = served.process_values(victim, "counter")
        assert victim_counted.get("upload_uploads_total", 0) > 0

        os.kill(victim, signal.SIGKILL)
        livesum = served.metrics_dir() / f"gauge_livesum_{victim}.db"
        deadline = time.monotonic() + 30
        while livesum.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not livesum.exists(), "the supervisor did not forget the killed process"
        assert not (served.metrics_dir() / f"gauge_livemax_{victim}.db").exists()  # its build info
        assert raw.read_response(sock) is None  # the stalled client's connection died with it

    replacement = served.wait_for_workers()
    assert victim not in replacement
    # What the killed process counted is still on disk, and in every scrape's totals.
    assert served.process_values(victim, "counter") == victim_counted
    after = served.scrape()
    assert value(after, "upload_uploads_in_flight") == 0
    assert [n for n, _ in after if n == "upload_build_info"] == ["upload_build_info"]
    for (name, labels), counted in before.items():
        if name.startswith(("upload_uploads_total", "upload_ingest_duration_seconds", "upload_received_bytes")):
            assert after.get((name, labels)) == counted, (name, labels)
        if name == "upload_http_requests_total" and ("route", "/v1/uploads") in labels:
            assert after.get((name, labels)) == counted, (name, labels)
    # The new process serves and counts.
    assert client.upload(samples.png_bytes(), "after.png").status_code == 202
    assert total(served.scrape(), "upload_uploads_total", outcome="accepted") == total(
        before, "upload_uploads_total", outcome="accepted"
    ) + 1


def test_two_processes_replaying_one_journal_store_each_event_once(served: Served) -> None:
    deadline = time.monotonic() + 60
    journal = Journal(served.server.settings.audit.journal_path)
    while journal.has_backlog() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert journal.backlog() == 0
    with served.server.sessions() as session:
        rows = list(session.scalars(select(AuditEventRow).where(AuditEventRow.chain == served.journal_tenant)))
        assert verify_chain(session, served.journal_tenant) == []
    assert Counter(row.event_id for row in rows) == Counter(served.journal_ids)
    assert sorted(row.seq for row in rows) == list(range(1, JOURNALED + 1))
    replayed = [
        json.loads(line) for line in served.server.log_text().splitlines()
        if line.startswith("{") and "events replayed into the database" in line
    ]
    assert sum(int(entry["msg"].split()[2]) for entry in replayed) == JOURNALED, replayed
    assert value(served.scrape(), "upload_audit_journal_backlog") == 0
