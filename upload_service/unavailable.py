"""A dependency that fails becomes the ``503`` contract here, in one place: the database (its
errors already translated inside ``db/``) and object storage alike, for the accept path, the
catalog and the API's own dependencies."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from upload_service.db.errors import DatabaseError, translated
from upload_service.errors import ErrorCode, ServiceError


@contextmanager
def database_errors() -> Iterator[None]:
    """The one place a database failure becomes the ``503`` contract (``db/`` has already
    translated the driver's errors into ``DatabaseError``; a bare SQLAlchemy error is
    translated here on its way)."""
    try:
        with translated():
            yield
    except DatabaseError as exc:
        raise unavailable("database", exc) from exc


def unavailable(dependency: str, exc: BaseException) -> ServiceError:
    return ServiceError(
        ErrorCode.DEPENDENCY_UNAVAILABLE,
        f"{dependency} is unavailable; try again later",
        internal=repr(exc),
        headers={"Retry-After": "5"},
    )
