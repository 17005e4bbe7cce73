"""The upload service audits its own decisions, whoever calls it: ``accept_upload`` called
directly (no HTTP route, no middleware) leaves ``upload:accepted`` committed with the row and
``upload:rejected`` for a refusal, on the real database, Redis and S3."""

from __future__ import annotations

import uuid

import anyio
import pytest
from sqlalchemy import select

from tests import samples
from tests.fixtures.app import body_of
from tests.fixtures.audit import request_audit_rows
from upload_service.auth import Principal, Scope
from upload_service.container import Services
from upload_service.db.models import Upload
from upload_service.errors import ErrorCode, ServiceError
from upload_service.ingest.body import BodyHeaders
from upload_service.service import UploadRequest


def test_accept_upload_called_directly_is_audited(services: Services) -> None:
    tenant = f"svc{uuid.uuid4().hex[:8]}"
    principal = Principal(key_id="k1", tenant=tenant, scopes=frozenset({Scope.UPLOAD}))
    png, html = samples.png_bytes(), samples.html_bytes()

    def request(data: bytes, content_type: str, request_id: str) -> UploadRequest:
        headers = BodyHeaders(content_type=content_type, content_length=str(len(data)), filename="f.png")
        return UploadRequest(principal=principal, headers=headers, request_id=request_id, client_addr="192.0.2.7")

    async def run() -> str:
        accepted = await services.uploads.accept_upload(request(png, "image/png", "req-accept"), body_of(png))
        with pytest.raises(ServiceError) as refused:
            await services.uploads.accept_upload(request(html, "image/png", "req-refuse"), body_of(html))
        assert refused.value.code is ErrorCode.UNSUPPORTED_MEDIA_TYPE
        return accepted.upload.id

    upload_id = anyio.run(run)
    # The accepted event committed with the row, before accept_upload returned.
    with services.sessions() as session:
        assert session.scalar(select(Upload.id).where(Upload.id == upload_id)) == upload_id
    [accepted_row] = request_audit_rows(services.sessions, "req-accept", timeout=0)
    assert (accepted_row.action, accepted_row.upload_id, accepted_row.tenant) == ("upload:accepted", upload_id, tenant)
    assert accepted_row.client_addr == "192.0.2.7" and accepted_row.key_id == "k1"
    [rejected_row] = request_audit_rows(services.sessions, "req-refuse")
    assert rejected_row.action == "upload:rejected"
    assert rejected_row.error_code == "UNSUPPORTED_MEDIA_TYPE" and rejected_row.tenant == tenant
