"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import time
import uuid

from tests.fixtures.app import LiveServer


def new_request_id(label: str = "e2e") -> str:
    """A client-chosen request id that passes the app's (and nginx's) validation rule."""
    return f"{label}-{uuid.uuid4().hex}"


def wait_for_empty_spool(server: LiveServer, timeout: float = 5.0) -> list[str]:
    """The spool's entries once the app has cleaned up (or what is left after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while server.spool_entries() and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.spool_entries()
