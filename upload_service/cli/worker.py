"""``upload-service worker [--queues] [--burst] [--simple]``: an RQ worker (workers/entry.py)."""

from __future__ import annotations

import argparse

from upload_service.settings import Settings
from workers.entry import run_worker


def run(settings: Settings, args: argparse.Namespace) -> int:
    return run_worker(settings, args)
