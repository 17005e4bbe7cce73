"""``upload-service worker [--queues] [--burst] [--simple]``: an RQ worker (workers/entry.py)."""

from __future__ import annotations

import argparse
import sys

from upload_service.settings import Settings
from upload_service.webhooks.secretbox import WebhookKeyError, check_configured_keys
from workers.entry import run_worker


def run(settings: Settings, args: argparse.Namespace) -> int:
    try:  # a configured webhook key must load; none at all only keeps the dispatcher off
        check_configured_keys(settings.webhooks)
    except WebhookKeyError as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 2
    queues = [name.strip() for name in (args.queues or "").split(",") if name.strip()]
    return run_worker(settings, queues=queues, burst=args.burst, simple=args.simple)
