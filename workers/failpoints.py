"""Fail points: named places in a job where a test holds the real work-horse, to SIGKILL it
exactly there or to let something else happen first (a DELETE) and then release it.

Off unless the environment variable ``FAILPOINTS_DIR_ENV`` names a directory (tests set it for the
worker processes they start; nothing else should). Then a point of one upload is armed by
creating the file ``<dir>/<upload id>.<name>.armed``. The first process to reach it takes it (an
atomic rename, so it fires once, and a retried job passes through), writes its pid to
``<dir>/<upload id>.<name>.held`` and waits until ``<dir>/<upload id>.<name>.release`` exists, at
most ``HOLD_SECONDS``. When off, a point costs one environment lookup.

The points of ``workers.jobs``, in order: ``claimed`` (claim and ``processing:started``
committed), ``before_pipeline`` (original fetched), ``in_pipeline`` (in the pipeline's
sandboxed child, held by that child, before it decodes), ``before_store`` (pipeline done, status
checked), ``artifacts_stored``, ``manifest_stored``, ``finished`` (terminal status and its
event committed).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

FAILPOINTS_DIR_ENV = "UPLOAD_SERVICE_TEST_FAILPOINTS_DIR"
HOLD_SECONDS = 60.0
_POLL_SECONDS = 0.01


def reached(name: str, upload_id: str) -> None:
    """Hold here if a test armed ``name`` for this upload; return at once otherwise."""
    directory = os.environ.get(FAILPOINTS_DIR_ENV)
    if not directory:
        return
    base = Path(directory)
    name = f"{upload_id}.{name}"
    try:
        os.rename(base / f"{name}.armed", base / f"{name}.taken")
    except FileNotFoundError:
        return
    pid = os.getpid()
    partial = base / f"{name}.held.{pid}"
    partial.write_text(str(pid))
    os.replace(partial, base / f"{name}.held")
    release = base / f"{name}.release"
    deadline = time.monotonic() + HOLD_SECONDS
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
