"""Response and request bodies of the v1 API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from upload_service.db.models import UploadValues


class ErrorInfo(BaseModel):
    code: str
    message: str


class ArtifactOut(BaseModel):
    name: str
    key: str
    size: int
    type: str
    sha256: str


class UploadOut(BaseModel):
    id: str
    filename: str | None
    size: int
    sha256: str
    declared_type: str | None
    detected_type: str
    status: str
    error: ErrorInfo | None
    metadata: dict[str, Any] | None
    tags: list[str] | None
    artifacts: list[ArtifactOut]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, upload: UploadValues) -> UploadOut:
        return cls(
            id=upload.id,
            filename=upload.filename,
            size=upload.size,
            sha256=upload.sha256,
            declared_type=upload.declared_type,
            detected_type=upload.detected_type,
            status=upload.status,
            error=ErrorInfo(code=upload.error_code, message=upload.error_message or "")
            if upload.error_code
            else None,
            metadata=upload.metadata_,
            tags=upload.tags,
            artifacts=[
                ArtifactOut(name=a.name, key=a.key, size=a.size, type=a.content_type, sha256=a.sha256)
                for a in upload.artifacts
            ],
            created_at=upload.created_at,
            updated_at=upload.updated_at,
        )


class UploadPatch(BaseModel):
    """PATCH body: only the fields sent change; ``null`` clears a field."""

    model_config = ConfigDict(extra="forbid")

    filename: str | None = Field(default=None, max_length=1024)
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None


class UploadList(BaseModel):
    """``GET /v1/uploads``: one page, newest first."""

    items: list[UploadOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page. Opaque: valid only with the same filters."
    )
