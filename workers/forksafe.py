"""A work-horse is not forked while another thread of the worker is importing a module.

Python keeps one lock per module being imported. A process forked while another of its threads
holds one inherits it held by a thread that does not exist in the child, and the child's own
import of that module waits for ever. A process's first S3 call imports ``encodings.idna`` (to
encode the host name): the reconciler thread's first round and every work-horse's first S3
read alike, so a work-horse forked during the former got stuck after ``processing:started``.
So every fork of the worker process first waits, up to ``IMPORT_WAIT_SECONDS``, until no other
thread holds a module lock.

The locks are CPython's (``importlib._bootstrap._module_locks``, weak references to locks with
``owner`` and ``count``); where they are not found, the fork does not wait.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from importlib import _bootstrap  # type: ignore[attr-defined]

log = logging.getLogger(__name__)

#: A fork waits at most this long for other threads' imports (then goes ahead, with a warning).
IMPORT_WAIT_SECONDS = 5.0

_registered = False


def imports_in_flight() -> int:
    """How many modules other threads of this process are importing right now."""
    me = threading.get_ident()
    busy = 0
    for ref in list(getattr(_bootstrap, "_module_locks", {}).values()):
        lock = ref()
        if lock is not None and getattr(lock, "count", 0) and getattr(lock, "owner", None) != me:
            busy += 1
    return busy


def wait_for_imports(timeout: float = IMPORT_WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while imports_in_flight():
        if time.monotonic() >= deadline:
            log.warning("forking while another thread imports a module: the child may hang on it")
            return
        time.sleep(0.001)


def install() -> None:
    """Make every later ``os.fork`` of this process wait for other threads' imports. Install it
    before anything else registers fork hooks that hold locks (e.g. the SQLite fork guard): the
    hooks registered first run last, right before the fork."""
    global _registered
    if not _registered:
        _registered = True
        os.register_at_fork(before=wait_for_imports)
