"""Several API processes share one spool (``serve --workers N``, replicas on one volume): a process
starting up removes only the part files no living process owns, never a sibling's upload in
flight."""

from __future__ import annotations

import hashlib
import os
import time

from tests import rawhttp as raw
from tests import samples
from tests.fixtures.app import LiveServer
from upload_service.ingest.spool import TEMP_PREFIX
from upload_service.storage import keys


def wait_for_part(server: LiveServer, known: set[str], timeout: float = 10.0) -> str:
    """The name of a part file other than ``known`` once one appears."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = [name for name in server.spool_entries() if name.startswith(TEMP_PREFIX) and name not in known]
        if parts:
            return parts[0]
        time.sleep(0.05)
    raise AssertionError("no part file appeared")


def test_a_starting_sibling_keeps_an_upload_in_flight_and_removes_orphans(server_factory) -> None:  # type: ignore[no-untyped-def]
    first: LiveServer = server_factory()
    spool = first.settings.spool.dir
    client = first.client()
    body = samples.pdf_bytes() + b"\n%" + os.urandom(512 * 1024).hex().encode()
    head = raw.head("POST", "/v1/uploads?filename=a.pdf", {
        "Authorization": f"Bearer {client.key}", "Content-Type": "application/pdf", "Content-Length": str(len(body)),
    })
    half = len(body) // 2
    # Orphans of a crashed process: nobody holds their lock. One is old (removed at the next
    # start), one is fresh (left alone: it could be a sibling's part between create and lock).
    orphan, fresh = spool / f"{TEMP_PREFIX}orphan", spool / f"{TEMP_PREFIX}fresh"
    orphan.write_bytes(b"left by a crash")
    fresh.write_bytes(b"just created")
    os.utime(orphan, (time.time() - 3600,) * 2)
    with raw.connect(first.url, timeout=30) as sock:
        sock.sendall(head + body[:half])
        in_flight = wait_for_part(first, {orphan.name, fresh.name})
        # Make the in-flight part look old too: only its owner's lock may protect it.
        os.utime(spool / in_flight, (time.time() - 3600,) * 2)

        second: LiveServer = server_factory(spool={"dir": spool})  # its start-up cleans the spool
        entries = set(second.spool_entries())
        assert in_flight in entries, entries
        assert orphan.name not in entries
        assert fresh.name in entries

        sock.sendall(body[half:])
        response = raw.read_response(sock)
    assert response is not None and response.status_code == 202, response and response.text
    record = response.json()
    assert record["size"] == len(body)
    assert record["sha256"] == hashlib.sha256(body).hexdigest()
    stored = first.store.head(first.settings.storage.originals_bucket, keys.original_key(client.tenant, record["id"]))
    assert stored.size == len(body) and stored.sha256 == record["sha256"]
    fresh.unlink()
    assert first.wait_for_empty_spool() == []


def test_both_siblings_serve_uploads_from_the_shared_spool(server_factory) -> None:  # type: ignore[no-untyped-def]
    first: LiveServer = server_factory()
    second: LiveServer = server_factory(spool={"dir": first.settings.spool.dir})
    for server in (first, second):
        response = server.client().upload(samples.png_bytes(), "a.png")
        assert response.status_code == 202, response.text
    assert first.wait_for_empty_spool() == []
