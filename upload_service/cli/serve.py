"""``upload-service serve [--host] [--port] [--uds] [--workers N]``: the API under uvicorn (server.py)."""

from __future__ import annotations

import argparse
import sys

from upload_service.logs import configure_logging
from upload_service.server import serve, worker_count
from upload_service.settings import Settings
from upload_service.tokens import TokenKeyError, load_keyring
from upload_service.webhooks.secretbox import WebhookKeyError, check_configured_keys


def run(settings: Settings, args: argparse.Namespace) -> int:
    configure_logging()
    workers = worker_count(args.workers, settings)
    try:  # refuse once, with one clear line, rather than in every API process
        load_keyring(settings.tokens)
        check_configured_keys(settings.webhooks)  # none at all only turns webhooks off
    except (TokenKeyError, WebhookKeyError) as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 2
    return serve(settings, host=args.host, port=args.port, uds=args.uds, workers=workers)
