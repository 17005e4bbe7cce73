"""End-to-end tests that use the live API leave no jobs behind: Redis is flushed before and
after each of them (the ``redis_url`` fixture), so later tests' workers never pick up uploads
made here."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_queue(request: pytest.FixtureRequest) -> None:
    if "server" in request.fixturenames or "front" in request.fixturenames:
        request.getfixturevalue("redis_url")
