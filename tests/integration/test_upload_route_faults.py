"""Unexpected failures on the upload route: answered in the error contract (``500 INTERNAL``,
nothing of the failure in the body) and still audited as ``upload:rejected`` — whether the
failure comes from the upload itself or from a dependency that runs before the route body."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests import samples
from tests.fixtures.app import LiveServer, make_settings
from tests.fixtures.services import RedisService, S3Service
from tests.integration.contract import assert_error, new_request_id
from tests.fixtures.audit import request_audit_rows
from upload_service.api import deps
from upload_service.app import create_app
from upload_service.db.engine import build_engine, build_sessionmaker
from upload_service.db.migrate import upgrade_to_head




def test_an_unexpected_error_while_accepting_is_a_500_and_an_audited_rejection(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The tenant's directory of a local object store is replaced by a symlink out of the store
    under a running API (a volume gone wrong): opening the original's writer fails with an
    error nothing expects (the store refuses a path that escapes its root).

    (Originals no longer pass through the spool directory, whose replacement by a plain file
    was this test's fault before: they stream to the object store.)"""
    objects = tmp_path / "objects"
    server: LiveServer = server_factory(storage={"backend": "local", "local_dir": objects})
    server.store.ensure_buckets()
    client = server.client()
    tenant_dir = objects / server.settings.storage.originals_bucket / client.tenant
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    tenant_dir.symlink_to(outside, target_is_directory=True)
    try:
        request_id = new_request_id("fault")
        response = client.upload(samples.png_bytes(), "a.png", headers={"X-Request-ID": request_id})
    finally:
        tenant_dir.unlink()

    error = assert_error(response, 500, "INTERNAL")
    assert error == {"code": "INTERNAL", "message": "internal error", "request_id": request_id, "details": None}
    assert response.headers["connection"] == "close"
    for leak in ("escapes", "ValueError", str(objects), str(outside)):
        assert leak not in response.text
    rows = request_audit_rows(server.sessions, request_id)
    assert [(r.action, r.outcome, r.error_code, r.tenant) for r in rows] == [
        ("upload:rejected", "failure", "INTERNAL", client.tenant)
    ]
    assert client.upload_count() == 0
    assert server.store.list_keys(server.settings.storage.originals_bucket, f"{client.tenant}/") == []
    assert list(outside.iterdir()) == []
    log = server.log_text()
    assert "unexpected error while accepting an upload" in log and "ValueError" in log  # the detail is logged
    # The API itself is fine once the store is back.
    assert client.upload(samples.png_bytes(), "a.png").status_code == 202


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_unexpected_error_in_a_dependency_of_the_upload_route_is_audited(
    anyio_backend: str,
    tmp_path: Path,
    database_url: str,
    redis_service: RedisService,
    s3_service: S3Service,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No live server can be made to fail inside its auth dependency on purpose: the app runs
    in-process (its lifespan builds the real DB, Redis and S3 clients) with that dependency
    raising, and the event must reach the real audit table."""
    settings = make_settings(tmp_path, database_url, redis_service.url, s3_service)
    settings.prepare_dirs()
    upgrade_to_head(settings.database)
    app = create_app(settings)

    async def broken_principal(*_args: object) -> None:
        raise RuntimeError("secret detail at /srv/private/path")

    # The upload route resolves the caller inside its one dependency (deps.get_upload_call).
    monkeypatch.setattr(deps, "get_principal", broken_principal)
    request_id = new_request_id("fault")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.post(
                "/v1/uploads", content=samples.png_bytes(),
                headers={"X-Request-ID": request_id, "Content-Type": "image/png", "Authorization": "Bearer x"},
            )
    error = assert_error(response, 500, "INTERNAL")
    assert error["message"] == "internal error" and "secret" not in response.text
    engine = build_engine(settings.database)
    try:
        rows = request_audit_rows(build_sessionmaker(engine), request_id)
    finally:
        engine.dispose()
    assert [(r.action, r.outcome, r.error_code) for r in rows] == [("upload:rejected", "failure", "INTERNAL")]
    shutil.rmtree(tmp_path / "spool", ignore_errors=True)
