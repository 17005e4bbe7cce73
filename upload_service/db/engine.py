"""Engine and session factory, built from settings by the app's lifespan or the worker."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from upload_service.settings import DatabaseSettings

log = logging.getLogger(__name__)

#: How long a fork waits for this process's SQLite connections in use to be returned.
FORK_WAIT_SECONDS = 10.0


def build_engine(settings: DatabaseSettings) -> Engine:
    """SQLite gets WAL, a busy timeout and foreign keys; others the URL as given.

    ``postgresql://`` URLs use psycopg 3.
    """
    url = settings.url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=settings.echo, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        _FORK_GUARD.watch(engine)
        return engine
    connect_args = {"connect_timeout": 3} if url.startswith("postgresql") else {}
    return create_engine(
        url, echo=settings.echo, pool_pre_ping=True, pool_size=10, max_overflow=10, connect_args=connect_args
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class _SqliteForkGuard:
    """A fork waits until no SQLite connection of this process is in use.

    SQLite keeps the locks its connections hold in per-process memory, which a forked child
    inherits as it was: forked while another thread's transaction held the write lock, the child
    (an RQ work-horse beside the worker's webhook dispatcher, say) sees that lock as held by a
    connection of its own process forever, and its first write waits out the whole busy timeout
    (30 s) and fails. So the SQLite connections checked out of the pool are counted (a
    connection holds a lock only while checked out: it is rolled back when returned; SQLAlchemy's
    ``commit``/``rollback`` events would come too early, before the DBAPI call that ends the
    transaction), and ``os.fork`` (``os.register_at_fork``) waits until none is out and holds
    new checkouts back until the fork is done. A fork while its own thread holds a connection
    can't wait for it: it goes ahead after ``FORK_WAIT_SECONDS``, with a warning."""

    def __init__(self) -> None:
        self._state = threading.Condition()
        self._open = 0
        self._forking = False
        self._registered = False

    def watch(self, engine: Engine) -> None:
        event.listen(engine, "checkout", self._begin)
        event.listen(engine, "checkin", self._end)
        if not self._registered:
            self._registered = True
            os.register_at_fork(
                before=self._before_fork, after_in_parent=self._after_fork_in_parent,
                after_in_child=self._after_fork_in_child,
            )

    def _begin(self, *_pool_event: Any) -> None:
        with self._state:
            while self._forking:
                self._state.wait()
            self._open += 1

    def _end(self, *_pool_event: Any) -> None:
        with self._state:
            self._open = max(0, self._open - 1)
            self._state.notify_all()

    def _before_fork(self) -> None:
        self._state.acquire()  # held across the fork: no connection is taken or returned meanwhile
        self._forking = True
        if not self._state.wait_for(lambda: self._open == 0, timeout=FORK_WAIT_SECONDS):
            log.warning("forking with %d SQLite connection(s) of this process in use", self._open)

    def _after_fork_in_parent(self) -> None:
        self._forking = False
        self._state.notify_all()
        self._state.release()

    def _after_fork_in_child(self) -> None:
        # The child has only the forking thread: none of the parent's connections in use are its own.
        self._state = threading.Condition()
        self._open = 0
        self._forking = False


_FORK_GUARD = _SqliteForkGuard()


def build_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success, rolls back on error and always closes."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
