"""``upload-service worker``: a real RQ worker on our queues, with the project's settings,
the shared JSON serializer, the scheduler (for retries with backoff) and the reconciler."""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from rq import SimpleWorker, Worker

from sqlalchemy.exc import SQLAlchemyError

from upload_service.container import build_audit_writer
from upload_service.db import webhooks_repo
from upload_service.db.engine import build_engine, build_sessionmaker
from upload_service.jobqueue import SERIALIZER
from upload_service.logs import configure_logging
from upload_service.reconciler import reconcile
from upload_service.settings import Settings
from upload_service.webhooks.dispatcher import Dispatcher
from upload_service.webhooks.metrics_sink import redis_outcome_counter
from upload_service.webhooks.secretbox import WebhookKeyError, check_configured_keys, keys_configured, load_secret_box
from workers import context

log = logging.getLogger("workers.entry")


def run_worker(settings: Settings, args: argparse.Namespace) -> int:
    configure_logging()
    try:
        check_configured_keys(settings.webhooks)
    except WebhookKeyError as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 2
    ctx = context.build_context(settings)
    context.install(ctx)
    names = [q.strip() for q in (args.queues or "").split(",") if q.strip()] or ctx.queue.queue_names()
    worker_class = SimpleWorker if args.simple else Worker
    worker = worker_class(
        [ctx.queue.queue(name) for name in names],
        connection=ctx.queue.connection,
        serializer=SERIALIZER,
    )
    stop = threading.Event()
    reconciler = threading.Thread(target=_reconcile_forever, args=(ctx, stop), name="reconciler", daemon=True)
    reconciler.start()
    ctx.audit.start_replayer(settings.audit.replay_interval_seconds, stop)
    start_webhook_dispatcher(ctx, stop)
    try:
        worker.work(burst=args.burst, with_scheduler=True, logging_level="INFO")
    finally:
        stop.set()
        ctx.close()
    return 0


def start_webhook_dispatcher(ctx: context.WorkerContext, stop: threading.Event) -> threading.Thread | None:
    """The webhook dispatcher, a thread of the worker's main process, on an engine of its own
    (a forked work-horse never shares its connections). Without ``webhooks.secret_keys`` there
    is nothing to sign with: it does not start, and says so loudly if endpoints exist."""
    settings = ctx.settings
    if keys_configured(settings.webhooks):
        box = load_secret_box(settings.webhooks)  # checked by run_worker before anything started
    else:
        try:
            with ctx.sessions() as session:
                endpoints = len(webhooks_repo.list_endpoints(session))
        except SQLAlchemyError:
            endpoints = 0
        if endpoints:
            log.error("webhook dispatcher NOT started (no webhooks.secret_keys): %d endpoints wait", endpoints)
        return None
    engine = build_engine(settings.database)
    sessions = build_sessionmaker(engine)
    dispatcher = Dispatcher(
        settings.webhooks, sessions, box, audit=build_audit_writer(settings, sessions, None),
        on_outcome=redis_outcome_counter(ctx.queue.connection),
    )

    def run() -> None:
        try:
            dispatcher.run_forever(stop)
        finally:
            engine.dispose()

    thread = threading.Thread(target=run, name="webhook-dispatcher", daemon=True)
    thread.start()
    return thread


def _reconcile_forever(ctx: context.WorkerContext, stop: threading.Event) -> None:
    """Re-enqueue uploads that lost their job (Redis down at accept time, a killed worker)."""
    interval = ctx.settings.queue.reconcile_interval_seconds
    while not stop.is_set():
        try:
            report = reconcile(ctx.settings, ctx.sessions, ctx.queue, store=ctx.store, audit=ctx.audit)
            if report.changed:
                log.info(report.summary())
        except Exception:  # noqa: BLE001 - keep reconciling after a failed round
            log.warning("reconcile round failed", exc_info=True)
        stop.wait(interval)
