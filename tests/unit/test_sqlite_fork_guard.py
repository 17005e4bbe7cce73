"""A process forked while another of its threads holds an SQLite write transaction (an RQ
work-horse forked beside the worker's webhook dispatcher) must still be able to write once that
transaction has ended: SQLite's per-process lock bookkeeping is inherited by the child, so
without ``db.engine``'s fork guard the child's write waits out its whole busy timeout and fails
with "database is locked" (seen in a CI run: a job's claim stuck for 30 s)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from sqlalchemy import Engine, text

from upload_service.db.engine import FORK_WAIT_SECONDS, build_engine, build_sessionmaker, session_scope
from upload_service.settings import DatabaseSettings


def database(tmp_path: Path) -> tuple[DatabaseSettings, Engine]:
    settings = DatabaseSettings(url=f"sqlite:///{tmp_path / 'fork.sqlite'}")
    engine = build_engine(settings)
    with session_scope(build_sessionmaker(engine)) as session:
        session.execute(text("create table counter (id integer primary key, value integer)"))
        session.execute(text("insert into counter values (1, 0)"))
    return settings, engine


def fork_and_write(settings: DatabaseSettings, engine: Engine) -> tuple[int, float]:
    """Fork; the child adds 10 through its own engine (4 s busy timeout) and exits 0 if it could.
    Returns the child's exit code and how long the fork itself took in the parent."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: only os._exit from here on
        code = 1
        try:
            engine.dispose(close=False)
            child = build_engine(settings)
            with child.connect() as connection:
                connection.execute(text("PRAGMA busy_timeout=4000"))
                connection.execute(text("update counter set value = value + 10 where id = 1"))
                connection.commit()
            code = 0
        finally:
            os._exit(code)
    forked = time.monotonic() - started
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), forked


def value(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("select value from counter where id = 1")).scalar_one())


def test_a_child_forked_during_another_threads_write_can_write(tmp_path: Path) -> None:
    settings, engine = database(tmp_path)
    sessions = build_sessionmaker(engine)
    inside = threading.Event()

    def writer() -> None:
        with session_scope(sessions) as session:
            session.execute(text("update counter set value = value + 1 where id = 1"))
            inside.set()
            time.sleep(1.0)  # the write lock is held while the main thread forks

    thread = threading.Thread(target=writer)
    thread.start()
    assert inside.wait(5)
    code, forked = fork_and_write(settings, engine)
    thread.join()
    assert code == 0, "the child could not write: it inherited the parent's lock"
    assert value(engine) == 11
    assert 0.5 < forked < FORK_WAIT_SECONDS  # the fork waited for the writer's commit, not longer


def test_a_fork_with_no_transaction_open_does_not_wait(tmp_path: Path) -> None:
    """Every kind of session use returns its connection (commit, rollback, a read closed unused), so a
    later fork goes at once."""
    settings, engine = database(tmp_path)
    sessions = build_sessionmaker(engine)
    with session_scope(sessions) as session:
        session.execute(text("update counter set value = value + 1 where id = 1"))
    with sessions() as session:
        session.execute(text("update counter set value = value + 100 where id = 1"))
        session.rollback()
    with sessions() as session:
        session.execute(text("select value from counter"))
    code, forked = fork_and_write(settings, engine)
    assert code == 0
    assert value(engine) == 11
    assert forked < 1.0
