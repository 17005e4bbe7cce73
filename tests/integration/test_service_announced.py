"""An accept announces its row to the group commit once its body is in (a batch being gathered
waits for it, ``db/groupcommit.py``); every way out of ``accept_upload`` ends that announcement,
or every later batch of the process would wait its full gathering time for a row that never
comes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from sqlalchemy import func, select

from tests import samples
from tests.fixtures.app import make_settings
from tests.fixtures.services import RedisService, S3Service
from upload_service.auth import Principal, Scope
from upload_service.container import build_services
from upload_service.db.migrate import upgrade_to_head
from upload_service.db.models import Upload
from upload_service.errors import ErrorCode, ServiceError
from upload_service.ingest.body import BodyHeaders
from upload_service.service import UploadRequest


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def test_accepted_replayed_and_failed_uploads_leave_no_announcement(
    tmp_path: Path, database_url: str, redis_service: RedisService, s3_service: S3Service
) -> None:
    settings = make_settings(tmp_path, database_url, redis_service.url, s3_service)
    settings.prepare_dirs()
    upgrade_to_head(settings.database)
    services = build_services(settings)
    services.start_background()
    tenant = f"ann{uuid.uuid4().hex[:8]}"
    principal = Principal(key_id="k1", tenant=tenant, scopes=frozenset({Scope.UPLOAD}))
    png = samples.png_bytes()

    def request(idempotency_key: str | None = None) -> UploadRequest:
        headers = BodyHeaders(content_type="image/png", content_length=str(len(png)), filename="f.png")
        return UploadRequest(
            principal=principal, headers=headers, request_id=uuid.uuid4().hex, idempotency_key=idempotency_key
        )

    async def accept(idempotency_key: str | None = None) -> str:
        accepted = await services.uploads.accept_upload(request(idempotency_key), chunks(png))
        return accepted.upload.id

    try:
        first = anyio.run(accept, "same-key")
        assert services.writes.announced == 0
        assert anyio.run(accept, "same-key") == first  # a replay: no row handed in
        assert services.writes.announced == 0
        s3_service.process.kill()
        try:
            with pytest.raises(ServiceError) as failed:  # the original's PUT fails
                anyio.run(accept)
        finally:
            s3_service.ensure_running()
        assert failed.value.code is ErrorCode.DEPENDENCY_UNAVAILABLE
        assert services.writes.announced == 0
        with services.sessions() as session:
            assert session.scalar(select(func.count()).where(Upload.tenant == tenant)) == 1
    finally:
        services.close()
