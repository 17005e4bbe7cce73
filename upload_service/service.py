"""The accept use case, with no web framework in sight (reading, changing and deleting stored
uploads is ``catalog.py``).

The accept path is: stream the body through the ingest loop straight into the object store's
writer for the original (opened once the type is decided; with S3, parts go out while the body
arrives) → commit the original (the last part and ``CompleteMultipartUpload``, or one ``PUT``; the
local backend fsyncs and renames) → hand the row, its webhook outbox rows and its
``upload:accepted`` audit event to the process's group commit (``groupwrites``), which commits
them with the other accepts that arrived meanwhile and then enqueues the batch's jobs. Only then
does the caller answer ``202``. Any failure before the row commits removes what was written: a
refusal or a disconnect aborts the writer (an S3 multipart upload is aborted), a failed commit
deletes the stored original. Every decision is audited by the service itself (``AuditSink``),
whoever calls it. Database failures arrive as ``db.errors.DatabaseError`` and become the ``503``
contract in one place, ``database_errors``.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from anyio import CancelScope, to_thread
from sqlalchemy.orm import Session, sessionmaker

from upload_service.admission import Admission
from upload_service.audit import AuditAction, AuditEvent
from upload_service.auth import Principal, Scope
from upload_service.db import repository, token_uses
from upload_service.db.engine import session_scope
from upload_service.db.errors import DatabaseError, ConstraintViolation, translated
from upload_service.db.groupcommit import Arrival
from upload_service.db.models import NewUploadValues, Upload, UploadStatus, UploadValues
from upload_service.errors import ErrorCode, ServiceError, StorageError
from upload_service.groupwrites import NewUpload, Writes
from upload_service.ingest.body import BodyHeaders, CountedBody, ReceivedBody, receive_body
from upload_service.ingest.formfields import metadata_with_fields
from upload_service.ingest.jsondepth import load_json
from upload_service.ingest.sniff import TypeSniffer, normalize_media_type
from upload_service.jobqueue import JobQueue
from upload_service.pending import PendingOriginals
from upload_service.settings import Settings
from upload_service.storage import keys
from upload_service.storage.base import ObjectStore, ObjectWriter
from upload_service.tokens import narrow_limits
from upload_service.unavailable import database_errors, unavailable

log = logging.getLogger(__name__)

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
#: The ``declared_type`` column's width.
MAX_DECLARED_TYPE_CHARS = 255


@dataclass(frozen=True)
class UploadRequest:
    principal: Principal
    headers: BodyHeaders
    request_id: str
    idempotency_key: str | None = None
    #: The client's address, for the audit events (behind nginx: the real client's).
    client_addr: str | None = None


@dataclass(frozen=True)
class Accepted:
    upload: UploadValues  # a new one's record, or the replayed upload's row
    replayed: bool  # an Idempotency-Key matched an earlier upload of the same bytes


class AuditSink(Protocol):
    """Where the service records the events of its decisions that are not written with a
    change of its own (a rejection, a replay). Never raises, never blocks on the database."""

    def record(self, event: AuditEvent) -> None: ...


class UploadService:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        store: ObjectStore,
        queue: JobQueue,
        sniffer: TypeSniffer,
        admission: Admission,
        writes: Writes,
        audit: AuditSink,
        pending: PendingOriginals,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store
        self.queue = queue
        self.sniffer = sniffer
        self.admission = admission
        self.writes = writes
        self.audit = audit
        self.pending = pending

    # --- accept ------------------------------------------------------------------------------

    async def accept_upload(self, request: UploadRequest, body: AsyncIterable[bytes]) -> Accepted:
        """Accept the upload or raise; either way the decision is audited: ``upload:accepted``
        commits with the row, a rejection or a replay goes to the audit sink (a missing scope
        is the caller's ``auth:failed``, recorded where the error is answered)."""
        counted = body if isinstance(body, CountedBody) else CountedBody(body)
        try:
            accepted = await self._accept(request, counted)
        except Exception as exc:
            if not (isinstance(exc, ServiceError) and exc.code is ErrorCode.FORBIDDEN):
                self._record_rejection(request, exc, counted.count)
            raise
        if accepted.replayed:
            upload = accepted.upload
            self.audit.record(self._event(
                request, AuditAction.UPLOAD_ACCEPTED, "success", upload_id=upload.id, sha256=upload.sha256,
                declared_type=upload.declared_type, detected_type=upload.detected_type, size=upload.size,
                details={"idempotent_replay": True},
            ))
        return accepted

    async def _accept(self, request: UploadRequest, body: AsyncIterable[bytes]) -> Accepted:
        request.principal.require(Scope.UPLOAD, token_allowed=True)
        if request.idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(request.idempotency_key):
            raise ServiceError(ErrorCode.BAD_REQUEST, "Idempotency-Key must be 1-255 visible ASCII characters")
        if self.admission.needs_redis:
            await to_thread.run_sync(self.admission.check)
        else:
            self.admission.check()  # a statvfs and cached queue depths: no need for a thread
        upload_id = uuid.uuid4().hex
        # An upload token's narrowing is applied by the ingest itself, as the limits it enforces.
        limits = narrow_limits(self.settings.limits, request.principal.token)
        claimed = await self._claim_token_use(request)
        bucket = self.settings.storage.originals_bucket
        original_key = keys.original_key(request.principal.tenant, upload_id)
        writers: list[ObjectWriter] = []
        stored = False  # the original is committed: aborting the writer would be a no-op

        # The body's declared length bounds the file's size (a form's parts included): S3 then
        # cuts its parts so the body ends on a part boundary and no part is sent twice.
        declared = request.headers.content_length
        size_hint = int(declared) if declared is not None and declared.isdigit() else None

        def open_original(detected_type: str) -> ObjectWriter:
            writer = self.store.open_writer(bucket, original_key, content_type=detected_type, size_hint=size_hint)
            writers.append(writer)
            return writer

        try:
            try:
                received = await receive_body(body, request.headers, open_original, limits, self.sniffer)
                metadata = parse_metadata(received.fields.get("metadata"), self.settings.limits.max_json_depth)
                metadata = metadata_with_fields(
                    metadata, received.fields, max_metadata_bytes=self.settings.limits.max_field_bytes
                )
                assert writers, "an accepted body has opened its writer"
                # Once the body is in, the accept runs to its end even if the client leaves (no
                # cancellation between the original's commit and the row's: no orphan object).
                with CancelScope(shield=True):
                    # Noted before the original is committed, settled once its row is (or the
                    # object is gone again): a process killed in between leaves a ledger entry
                    # that the next start sweeps (upload_service/pending.py).
                    note = self.pending.note(upload_id, original_key)
                    # The row will join a group commit soon: a batch being gathered waits for it.
                    arrival = self.writes.expect()
                    try:
                        earlier = await self._earlier_upload(request, received)
                        if earlier is not None:
                            accepted = earlier
                        else:
                            # Up to one part, the original goes out from the event loop (S3).
                            await writers[0].commit_async(received.file.sha256)
                            stored = True
                            accepted = await self._record(request, upload_id, received, metadata, arrival)
                    finally:
                        arrival.cancel()
                        note.done()
            except StorageError as exc:
                raise unavailable("object storage", exc) from exc
            finally:
                if writers and not stored:
                    # A refusal, a disconnect, a failure: nothing of the original may remain.
                    # Shielded: a cancelled request still cleans up.
                    with CancelScope(shield=True):
                        await to_thread.run_sync(self._abort_writer, writers[0])
        except BaseException:
            if claimed:
                await self._release_token_use(request)
            raise
        if claimed and accepted.replayed:
            await self._release_token_use(request)
        return accepted

    async def _claim_token_use(self, request: UploadRequest) -> bool:
        """Take one of an upload token's uses before the body is read (403 FORBIDDEN when none
        is left). A refused or replayed upload gives its use back, so only accepted uploads
        count; uploads in flight hold theirs, so racing requests can't exceed ``max_uploads``.
        A retry of an upload this token already made (same Idempotency-Key) needs no use: it
        answers the earlier upload. Returns whether a use was taken."""
        token = request.principal.token
        if token is None:
            return False
        expires = datetime.fromtimestamp(token.expires_at, timezone.utc)

        def claim() -> bool:
            with database_errors():
                if token_uses.claim_use(self.sessions, token.jti, token.tenant, token.max_uploads, expires):
                    return True
                if request.idempotency_key is not None:
                    with session_scope(self.sessions) as session:
                        if token_uses.token_upload_for_key(session, token.tenant, token.jti, request.idempotency_key):
                            return False
            raise ServiceError(
                ErrorCode.FORBIDDEN, f"this upload token has been used for its {token.max_uploads} upload(s)"
            )

        return await to_thread.run_sync(claim)

    async def _release_token_use(self, request: UploadRequest) -> None:
        assert request.principal.token is not None
        with CancelScope(shield=True):
            try:
                with translated():
                    await to_thread.run_sync(token_uses.release_use, self.sessions, request.principal.token.jti)
            except DatabaseError:
                log.warning("could not give back a use of upload token %s", request.principal.token.jti, exc_info=True)

    @staticmethod
    def _abort_writer(writer: ObjectWriter) -> None:
        try:
            writer.abort()
        except StorageError:
            log.warning("could not abort the upload of an unaccepted original", exc_info=True)

    async def _earlier_upload(self, request: UploadRequest, received: ReceivedBody) -> Accepted | None:
        """The replay of an earlier upload with this Idempotency-Key (the caller then aborts
        the writer), if there is one; looked up in a thread, and only when a key was given."""
        if request.idempotency_key is None:
            return None
        earlier = await to_thread.run_sync(self._find_by_idempotency_key, request)
        return None if earlier is None else self._replay(earlier, received, request.principal)

    async def _record(
        self,
        request: UploadRequest,
        upload_id: str,
        received: ReceivedBody,
        metadata: dict[str, Any] | None,
        arrival: Arrival,
    ) -> Accepted:
        """The row, its outbox rows and its ``upload:accepted`` event in the process's next group
        commit; answered once that batch has committed (the caller shields this: whatever
        happens to the request, the outcome is known and a failure cleans up). A failed commit
        deletes the stored original; a racing request with the same Idempotency-Key is a replay."""
        upload = self._new_upload(request, upload_id, received, metadata)
        event = self._event(
            request, AuditAction.UPLOAD_ACCEPTED, "success", upload_id=upload.id, sha256=upload.sha256,
            declared_type=upload.declared_type, detected_type=upload.detected_type, size=upload.size,
        )
        try:
            await self.writes.commit(NewUpload(upload, event), arrival)
        except DatabaseError as exc:
            return await to_thread.run_sync(self._after_failed_commit, request, upload, received, exc)
        return Accepted(upload=upload, replayed=False)

    def _after_failed_commit(
        self, request: UploadRequest, upload: NewUploadValues, received: ReceivedBody, error: DatabaseError
    ) -> Accepted:
        self._forget_original(self.settings.storage.originals_bucket, upload.original_key)
        if isinstance(error, ConstraintViolation) and request.idempotency_key is not None:
            # Another request with the same Idempotency-Key committed first.
            earlier = self._find_by_idempotency_key(request)
            if earlier is not None:
                return self._replay(earlier, received, request.principal)
        raise unavailable("database", error) from error

    def _new_upload(
        self, request: UploadRequest, upload_id: str, received: ReceivedBody, metadata: dict[str, Any] | None
    ) -> NewUploadValues:
        file = received.file
        principal = request.principal
        now = repository.utcnow()
        return NewUploadValues(
            id=upload_id,
            tenant=principal.tenant,
            filename=file.filename,
            size=file.size,
            sha256=file.sha256,
            declared_type=stored_declared_type(file.declared_type),
            detected_type=file.detected_type,
            status=UploadStatus.QUEUED,
            metadata_=_with_token_metadata(metadata, principal),
            tags=list(principal.token.tags) if principal.token and principal.token.tags else None,
            original_key=keys.original_key(principal.tenant, upload_id),
            idempotency_key=request.idempotency_key,
            request_id=request.request_id,
            key_id=principal.key_id,
            token_id=principal.token_id,
            created_at=now,
            updated_at=now,
        )

    def _find_by_idempotency_key(self, request: UploadRequest) -> Upload | None:
        tenant, key = request.principal.tenant, request.idempotency_key or ""
        return self._db(lambda session: repository.find_by_idempotency_key(session, tenant, key))

    def _replay(self, earlier: Upload, received: ReceivedBody, principal: Principal) -> Accepted:
        if principal.token is not None and earlier.token_id != principal.token_id:
            # An upload token never learns of uploads it did not make.
            raise ServiceError(ErrorCode.IDEMPOTENCY_CONFLICT, "this Idempotency-Key was used by another client")
        if earlier.sha256 != received.file.sha256 or earlier.size != received.file.size:
            raise ServiceError(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                "this Idempotency-Key was used for a different file",
                details={"upload_id": earlier.id},
            )
        return Accepted(upload=earlier, replayed=True)

    def _forget_original(self, bucket: str, key: str) -> None:
        try:
            self.store.delete(bucket, key)
        except StorageError:
            log.exception("could not delete an unrecorded original", extra={"key": key})

    def _record_rejection(self, request: UploadRequest, exc: Exception, received: int) -> None:
        error = exc if isinstance(exc, ServiceError) else None
        details = error.details if error is not None and isinstance(error.details, dict) else {}
        code = error.code.value if error is not None else ErrorCode.INTERNAL.value
        self.audit.record(self._event(
            request, AuditAction.UPLOAD_REJECTED, "failure", declared_type=request.headers.content_type,
            detected_type=str(details.get("detected_type") or "") or None, size=received, error_code=code,
        ))

    @staticmethod
    def _event(request: UploadRequest, action: AuditAction, outcome: str, **fields: Any) -> AuditEvent:
        """An event of this request: who (the tenant, the key, an upload token's id), from where."""
        principal = request.principal
        if principal.token_id is not None:
            fields["details"] = {**(fields.get("details") or {}), "token_id": principal.token_id}
        return AuditEvent(
            action=action, outcome=outcome, tenant=principal.tenant, key_id=principal.key_id,
            client_addr=request.client_addr, request_id=request.request_id or None, **fields,
        )

    def _db(self, work: Any) -> Any:
        with database_errors(), session_scope(self.sessions) as session:
            return work(session)


def parse_metadata(raw: bytes | None, max_depth: int) -> dict[str, Any] | None:
    """The optional ``metadata`` form field: a JSON object nested at most ``max_depth`` levels
    (checked on the raw bytes before the recursive decoder runs), or 422 VALIDATION_FAILED."""
    if raw is None:
        return None
    value = load_json(raw, max_depth, field="metadata")
    if not isinstance(value, dict):
        raise ServiceError(
            ErrorCode.VALIDATION_FAILED,
            "metadata must be a JSON object",
            details=[{"loc": ["body", "metadata"], "msg": f"got {type(value).__name__}"}],
        )
    return value


def stored_declared_type(declared: str | None) -> str | None:
    """What the record keeps of the client's declared type: the normalized media type
    (parameters stripped, aliases resolved, lower-case), bounded by the column's 255
    characters — never the raw header, whose length is the client's choice."""
    normalized = normalize_media_type(declared)[:MAX_DECLARED_TYPE_CHARS]
    return normalized or None


def _with_token_metadata(metadata: dict[str, Any] | None, principal: Principal) -> dict[str, Any] | None:
    """An upload token's fixed metadata, over whatever the client sent."""
    fixed = principal.token.metadata if principal.token is not None else None
    return {**(metadata or {}), **fixed} if fixed else metadata
