"""Several API processes share one spool (``serve --workers N``, replicas on one volume): a process
starting up removes only the part files no living process owns, never a sibling's upload in
flight."""

from __future__ import annotations

import hashlib
import os
import time

from tests import samples
from tests.fixtures.app import LiveServer
from upload_service.ingest.spool import TEMP_PREFIX, SpoolFile
from upload_service.storage import keys


def test_a_starting_sibling_keeps_a_living_owners_part_and_removes_orphans(server_factory) -> None:  # type: ignore[no-untyped-def]
    """Originals stream to the object store now, so an upload in flight has no spool part; the
    start-up sweep is still what keeps the shared spool clean. A part held by a living process
    (this test's, through ``SpoolFile``'s own ``flock``) survives a sibling's start, old as it
    looks; an unlocked old one goes; a fresh one stays. Uploads meanwhile are unaffected."""
    first: LiveServer = server_factory()
    spool = first.settings.spool.dir
    client = first.client()
    body = samples.pdf_bytes() + b"\n%" + os.urandom(512 * 1024).hex().encode()
    orphan, fresh = spool / f"{TEMP_PREFIX}orphan", spool / f"{TEMP_PREFIX}fresh"
    orphan.write_bytes(b"left by a crash")
    fresh.write_bytes(b"just created")
    os.utime(orphan, (time.time() - 3600,) * 2)
    with SpoolFile(spool) as held:
        held.write(b"in flight")
        os.utime(held.temp_path, (time.time() - 3600,) * 2)  # only its owner's lock may protect it
        second: LiveServer = server_factory(spool={"dir": spool})  # its start-up cleans the spool
        entries = set(second.spool_entries())
        assert held.temp_path.name in entries, entries
        assert orphan.name not in entries
        assert fresh.name in entries
        response = client.request(
            "POST", "/v1/uploads", params={"filename": "a.pdf"}, content=body, headers={"Content-Type": "application/pdf"}
        )
    assert response.status_code == 202, response.text
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
