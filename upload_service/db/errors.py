"""The database layer's one exception type: what callers above ``db/`` see instead of the
driver's and SQLAlchemy's own errors (the service turns it into ``503`` with Retry-After)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError, SQLAlchemyError


class DatabaseError(Exception):
    """The database failed or could not be reached; the message names the error class only
    (driver messages can carry hosts, users and SQL values)."""


class ConstraintViolation(DatabaseError):
    """A constraint refused a row: a duplicate (two requests with one Idempotency-Key), or any
    other integrity check, some of which (deferred ones) only fail at the commit."""


def describe(error: BaseException) -> str:
    original = getattr(error, "orig", None)
    return type(error).__name__ + (f"/{type(original).__name__}" if original is not None else "")


def translate(error: SQLAlchemyError) -> DatabaseError:
    kind = ConstraintViolation if isinstance(error, IntegrityError) else DatabaseError
    return kind(describe(error))


@contextmanager
def translated() -> Iterator[None]:
    """Raise ``DatabaseError`` (chained to the original) for any SQLAlchemy error inside."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise translate(exc) from exc
