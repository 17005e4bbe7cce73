"""Fixtures of the integration tests alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.app import LiveServer
from tests.fixtures.services import S3Service
from tests.integration.webhookreceiver import Receiver
from tests.integration.workerfaults import FailPoints
from workers.failpoints import FAILPOINTS_DIR_ENV


@pytest.fixture
def schema(server: LiveServer) -> dict[str, Any]:
    """The OpenAPI document the running server serves."""
    return httpx.get(server.url + "/openapi.json", timeout=10).json()  # type: ignore[no-any-return]


@pytest.fixture
def failpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FailPoints]:
    """Fail points on for the worker processes started after this fixture (they inherit it)."""
    directory = tmp_path / "failpoints"
    directory.mkdir()
    monkeypatch.setenv(FAILPOINTS_DIR_ENV, str(directory))
    points = FailPoints(directory)
    yield points
    for armed in directory.glob("*.held"):  # never leave a work-horse waiting
        (directory / armed.name.replace(".held", ".release")).touch()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on loopback that verifies every delivery (``standardwebhooks``)."""
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def s3(s3_service: S3Service) -> Iterator[Any]:
    """A boto3 client of the tests' S3 server, running before and after the test (tests may stop it)."""
    s3_service.ensure_running()
    yield s3_service.client()
    s3_service.ensure_running()
