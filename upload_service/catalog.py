"""Use cases on stored uploads, with no web framework in sight: read one, list a page, change
its filename, metadata or tags, delete it, and link to one of its artifacts. Each runs in the
caller's session (the route's, committed when the route returns) and sees only the caller's
tenant, and an upload token only its own uploads: anything else is ``404``, never ``403``, so
ids of other tenants don't leak. Accepting an upload is ``service.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from upload_service import listing
from upload_service.auth import Principal, Scope
from upload_service.db import repository
from upload_service.db.models import VISIBLE_STATUSES, Upload, UploadStatus
from upload_service.errors import ErrorCode, ServiceError, StorageError
from upload_service.ingest.filenames import sanitize_filename
from upload_service.settings import Settings
from upload_service.storage import keys
from upload_service.storage.base import ObjectStore
from upload_service.unavailable import unavailable
from upload_service.webhooks.events import EventType
from upload_service.webhooks.outbox import record_upload_event

MAX_TAGS, MAX_TAG_CHARS = 50, 64


@dataclass(frozen=True)
class UploadPage:
    items: list[Upload]
    next_cursor: str | None  # None: this is the last page


class UploadCatalog:
    def __init__(self, settings: Settings, store: ObjectStore) -> None:
        self.settings = settings
        self.store = store

    def get_upload(self, session: Session, principal: Principal, upload_id: str) -> Upload:
        principal.require(Scope.READ, token_allowed=True)
        return self._find(session, principal, upload_id)

    def list_uploads(
        self,
        session: Session,
        principal: Principal,
        *,
        limit: int = listing.DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
        status: str | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
        tag: str | None = None,
    ) -> UploadPage:
        """One page of the caller's uploads, newest first (an upload token sees only its own);
        ``next_cursor`` is None on the last page. Bad filters are 422, a bad cursor 400."""
        principal.require(Scope.READ, token_allowed=True)
        filters = listing.ListFilters(
            tenant=principal.tenant,
            token_id=principal.token_id,
            status=listing.check_status(status, tuple(str(s) for s in VISIBLE_STATUSES)),
            created_after=listing.parse_timestamp(created_after, "created_after"),
            created_before=listing.parse_timestamp(created_before, "created_before"),
            tag=listing.check_tag(tag),
        )
        limit = listing.check_page_size(limit)
        after = listing.decode_cursor(cursor, filters) if cursor is not None else None
        rows = repository.list_uploads(
            session, filters.tenant, limit=limit + 1, token_id=filters.token_id, status=filters.status,
            created_after=filters.created_after, created_before=filters.created_before, tag=filters.tag,
            after=(after.created_at, after.upload_id) if after is not None else None,
        )
        page, more = rows[:limit], len(rows) > limit
        next_cursor = None
        if more:
            last = page[-1]
            next_cursor = listing.encode_cursor(listing.Position(last.created_at, last.id), filters)
        return UploadPage(items=page, next_cursor=next_cursor)

    def patch_upload(self, session: Session, principal: Principal, upload_id: str, changes: dict[str, Any]) -> Upload:
        """Only the fields present in ``changes`` change; a ``None`` value clears the field."""
        principal.require(Scope.UPLOAD)
        if not changes:
            raise ServiceError(ErrorCode.NO_FIELDS, "send at least one of filename, metadata, tags")
        upload = self._find(session, principal, upload_id)
        if "filename" in changes:
            upload.filename = sanitize_filename(changes["filename"], max_chars=self.settings.limits.max_filename_chars)
            if changes["filename"] is not None and upload.filename is None:
                raise ServiceError(ErrorCode.VALIDATION_FAILED, "the filename has no usable characters")
        if "metadata" in changes:
            upload.metadata_ = changes["metadata"]
        if "tags" in changes:
            upload.tags = check_tags(changes["tags"])
        upload.updated_at = repository.utcnow()
        session.flush()
        return upload

    def delete_upload(self, session: Session, principal: Principal, upload_id: str) -> None:
        """Mark the row ``deleting`` and commit, then remove the objects, then the row.

        The committed mark is what a job still running checks before and after it stores
        artifacts and when it commits ``done``: it then removes its own prefix, so whatever the
        interleaving nothing is left. A failure after the mark answers 503 and keeps the row
        (reads answer 404); the next DELETE, or the reconciler, finishes the job.
        """
        principal.require(Scope.UPLOAD)
        upload = self._find(session, principal, upload_id, include_deleting=True)
        if upload.status != UploadStatus.DELETING:
            repository.mark_deleting(session, upload.id)
            session.commit()
        prefix = keys.upload_prefix(upload.tenant, upload.id)
        try:
            self.store.delete_prefix(self.settings.storage.originals_bucket, prefix)
            self.store.delete_prefix(self.settings.storage.artifacts_bucket, prefix)
        except StorageError as exc:
            raise unavailable("object storage", exc) from exc
        if repository.delete_upload(session, upload):
            # Committed with the row's removal (the request's session), or not at all; a
            # concurrent DELETE that removed the row first wrote the one event.
            record_upload_event(
                session, upload, EventType.UPLOAD_DELETED, occurred_at=repository.utcnow(), status="deleted"
            )

    def artifact_url(self, session: Session, principal: Principal, upload_id: str, name: str) -> str:
        upload = self.get_upload(session, principal, upload_id)
        artifact = next((a for a in upload.artifacts if a.name == name), None)
        if artifact is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "no such artifact")
        try:
            return self.store.presign_get(
                self.settings.storage.artifacts_bucket,
                artifact.key,
                ttl_seconds=self.settings.storage.presign_ttl_seconds,
            )
        except StorageError as exc:
            raise unavailable("object storage", exc) from exc

    def _find(self, session: Session, principal: Principal, upload_id: str, *, include_deleting: bool = False) -> Upload:
        """The caller's tenant's upload, or 404 (never 403: ids of other tenants don't leak).

        An upload being deleted is 404 too, except to DELETE itself (which finishes it)."""
        upload = repository.get_upload(session, principal.tenant, upload_id, include_deleting=include_deleting)
        if upload is None or (principal.token is not None and upload.token_id != principal.token_id):
            # An upload token reads only the uploads it created.
            raise ServiceError(ErrorCode.NOT_FOUND, "no such upload")
        return upload


def check_tags(tags: list[str] | None) -> list[str] | None:
    if tags is None:
        return None
    if len(tags) > MAX_TAGS or any(not t or len(t) > MAX_TAG_CHARS for t in tags):
        raise ServiceError(
            ErrorCode.VALIDATION_FAILED, f"at most {MAX_TAGS} tags of 1 to {MAX_TAG_CHARS} characters"
        )
    return list(dict.fromkeys(tags))
