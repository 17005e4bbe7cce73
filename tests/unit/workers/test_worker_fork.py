"""A forked work-horse (or pipeline child) never talks on the worker's pooled DB connections."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import text

from upload_service.db.engine import build_engine
from upload_service.settings import DatabaseSettings
from workers.context import _drop_pool_in_forked_children


def test_a_forked_child_opens_its_own_db_connections(tmp_path: Path) -> None:
    engine = build_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/w.db"))
    _drop_pool_in_forked_children(engine)
    with engine.connect() as connection:  # now pooled in the parent, marked as the parent's
        connection.connection.info["owner"] = os.getpid()
        connection.execute(text("select 1"))
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            with engine.connect() as connection:
                owner = connection.connection.info.get("owner", 0)
            os.write(write_fd, str(owner).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    owner_in_child = int(os.read(read_fd, 100) or b"-1")
    os.close(read_fd)

    assert owner_in_child == 0  # a fresh connection, not the parent's pooled one
    with engine.connect() as connection:
        assert connection.connection.info["owner"] == os.getpid()  # the parent's is untouched
    engine.dispose()
