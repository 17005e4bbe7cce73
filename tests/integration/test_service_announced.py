"""An accept announces its row to the group commit once its body is in (a batch being gathered
waits for it, ``db/groupcommit.py``); every way out of ``accept_upload`` ends that announcement,
or every later batch of the process would wait its full gathering time for a row that never
comes."""

from __future__ import annotations

import uuid

import anyio
import pytest
from sqlalchemy import func, select

from tests import samples
from tests.fixtures.app import body_of
from tests.fixtures.services import S3Service
from upload_service.auth import Principal, Scope
from upload_service.container import Services
from upload_service.db.models import Upload
from upload_service.errors import ErrorCode, ServiceError
from upload_service.ingest.body import BodyHeaders
from upload_service.service import UploadRequest


def test_accepted_replayed_and_failed_uploads_leave_no_announcement(services: Services, s3_service: S3Service) -> None:
    tenant = f"ann{uuid.uuid4().hex[:8]}"
    principal = Principal(key_id="k1", tenant=tenant, scopes=frozenset({Scope.UPLOAD}))
    png = samples.png_bytes()

    def request(idempotency_key: str | None = None) -> UploadRequest:
        headers = BodyHeaders(content_type="image/png", content_length=str(len(png)), filename="f.png")
        return UploadRequest(
            principal=principal, headers=headers, request_id=uuid.uuid4().hex, idempotency_key=idempotency_key
        )

    async def accept(idempotency_key: str | None = None) -> str:
        accepted = await services.uploads.accept_upload(request(idempotency_key), body_of(png))
        return accepted.upload.id

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
