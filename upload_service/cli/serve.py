"""``upload-service serve [--host] [--port] [--uds] [--workers N]``: the API under uvicorn (server.py)."""

from __future__ import annotations

import argparse

from upload_service.logs import configure_logging
from upload_service.server import serve, worker_count
from upload_service.settings import Settings


def run(settings: Settings, args: argparse.Namespace) -> int:
    configure_logging()
    workers = worker_count(args.workers, settings)
    return serve(settings, host=args.host, port=args.port, uds=args.uds, workers=workers)
