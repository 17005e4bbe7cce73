"""While the API serves, Python's cyclic collector leaves alone what start-up built (it froze
those objects: every full collection walked ~180,000 of them with the event loop stopped) and
runs its young collections less often; when the API stops, both are undone. The app runs
in-process, its lifespan building the real DB, Redis and S3 clients."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import httpx
import pytest

from tests.fixtures.app import make_settings
from tests.fixtures.services import RedisService, S3Service
from upload_service.app import YOUNG_COLLECTION_THRESHOLD, create_app
from upload_service.db.migrate import upgrade_to_head


def tracked_by_the_collector(target: object) -> bool:
    """Whether the collector still scans ``target`` (frozen objects are not in its lists)."""
    return any(obj is target for obj in gc.get_objects())


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_collector_skips_the_start_up_heap_while_the_api_serves(
    anyio_backend: str, tmp_path: Path, database_url: str, redis_service: RedisService, s3_service: S3Service
) -> None:
    settings = make_settings(tmp_path, database_url, redis_service.url, s3_service)
    settings.prepare_dirs()
    upgrade_to_head(settings.database)
    app = create_app(settings)
    before = gc.get_threshold(), gc.get_freeze_count()
    assert before[1] == 0
    async with app.router.lifespan_context(app):
        services = app.state.services  # built at start-up
        assert gc.is_tracked(services) and not tracked_by_the_collector(services)
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *before[0][1:])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/livez")).status_code == 200
        made_later: list[object] = []
        made_later.append(made_later)  # a cycle made while serving is the collector's to free
        assert tracked_by_the_collector(made_later)
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
    assert tracked_by_the_collector(services)
    shutil.rmtree(tmp_path / "spool", ignore_errors=True)
