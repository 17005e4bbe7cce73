"""The worker process (``upload-service worker``): a real RQ worker on our queues, with the
project's settings, the shared JSON serializer, the scheduler (for retries with backoff), the
reconciler and the webhook dispatcher. Its clients come from ``context.py``, the worker's
composition root; the command line (arguments, refusals) is ``upload_service/cli/worker.py``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from rq import SimpleWorker, Worker

from sqlalchemy.exc import SQLAlchemyError

from upload_service.db import webhooks_repo
from upload_service.jobqueue import SERIALIZER
from upload_service.logs import configure_logging
from upload_service.reconciler import reconcile
from upload_service.settings import Settings
from upload_service.webhooks.dispatcher import Dispatcher
from upload_service.webhooks.metrics_sink import redis_outcome_counter
from upload_service.webhooks.secretbox import keys_configured, load_secret_box
from workers import context

log = logging.getLogger("workers.entry")


def run_worker(settings: Settings, *, queues: Sequence[str] = (), burst: bool = False, simple: bool = False) -> int:
    """Work the named queues (all when none are named) until stopped, or until they are empty
    with ``burst``; ``simple`` runs jobs in this process instead of a forked work-horse.
    The webhook keys were checked by the caller (a configured key that fails to load refuses)."""
    configure_logging()
    ctx = context.build_context(settings)
    context.install(ctx)
    names = list(queues) or ctx.queue.queue_names()
    worker_class = SimpleWorker if simple else Worker
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
        worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
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
    clients = context.build_dispatcher_clients(settings)
    dispatcher = Dispatcher(
        settings.webhooks, clients.sessions, box, audit=clients.audit,
        on_outcome=redis_outcome_counter(ctx.queue.connection),
    )

    def run() -> None:
        try:
            dispatcher.run_forever(stop)
        finally:
            clients.close()

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
