"""Use counts of upload tokens: the one piece of token state, kept in the DB (already on the
accept path) so that ``max_uploads`` holds across API nodes and concurrent requests.

``claim_use`` is atomic: the first use inserts the row (a concurrent first use hits the primary
key and falls through to the update); later uses are one ``UPDATE ... WHERE uses < max``, so
two racing requests can't both take the last use.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from upload_service.db.models import Upload, UploadTokenUse
from upload_service.db.repository import utcnow

log = logging.getLogger(__name__)

#: Rows of tokens expired longer than this are deleted when a new token is first used.
_KEEP_EXPIRED = timedelta(minutes=10)


def claim_use(sessions: sessionmaker[Session], token_id: str, tenant: str, max_uses: int, expires_at: datetime) -> bool:
    """Take one use of the token; False when all ``max_uses`` are taken."""
    try:
        with sessions.begin() as session:
            session.add(UploadTokenUse(token_id=token_id, tenant=tenant, uses=1, expires_at=expires_at))
    except IntegrityError:
        pass  # not the first use
    else:
        forget_expired(sessions)
        return True
    with sessions.begin() as session:
        statement = (
            update(UploadTokenUse)
            .where(UploadTokenUse.token_id == token_id, UploadTokenUse.uses < max_uses)
            .values(uses=UploadTokenUse.uses + 1)
        )
        return session.execute(statement).rowcount == 1


def forget_expired(sessions: sessionmaker[Session]) -> None:
    """Delete the rows of long-expired tokens; in its own transaction, so that two of these
    racing (a deadlock on PostgreSQL, a busy SQLite) can't fail a claim: the next one retries."""
    try:
        with sessions.begin() as session:
            session.execute(delete(UploadTokenUse).where(UploadTokenUse.expires_at < utcnow() - _KEEP_EXPIRED))
    except SQLAlchemyError:
        log.warning("could not delete expired upload-token rows; the next first use retries", exc_info=True)


def release_use(sessions: sessionmaker[Session], token_id: str) -> None:
    """Give back a use taken by an upload that was refused or replayed."""
    with sessions.begin() as session:
        session.execute(
            update(UploadTokenUse)
            .where(UploadTokenUse.token_id == token_id, UploadTokenUse.uses > 0)
            .values(uses=UploadTokenUse.uses - 1)
        )


def token_upload_for_key(session: Session, tenant: str, token_id: str, idempotency_key: str) -> str | None:
    """The id of the upload this token already made with this Idempotency-Key (a retry)."""
    return session.scalar(
        select(Upload.id).where(
            Upload.tenant == tenant, Upload.idempotency_key == idempotency_key, Upload.token_id == token_id
        )
    )
