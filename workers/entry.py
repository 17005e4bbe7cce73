"""The worker process (``upload-service worker``): a real RQ worker on our queues, with the
project's settings, the shared JSON serializer, the scheduler (for retries with backoff), the
reconciler and the webhook dispatcher. Its clients come from ``context.py``, the worker's
composition root; the command line (arguments, refusals) is ``upload_service/cli/worker.py``."""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from collections.abc import Sequence

from rq import SimpleWorker, Worker

from sqlalchemy.exc import SQLAlchemyError

from upload_service.db import webhooks_repo
from upload_service.jobqueue import SERIALIZER, JobQueue
from upload_service.logs import configure_logging
from upload_service.reconciler import reconcile
from upload_service.settings import Settings
from upload_service.webhooks.dispatcher import Dispatcher
from upload_service.webhooks.metrics_sink import redis_outcome_counter
from upload_service.webhooks.secretbox import keys_configured, load_secret_box
from workers import context, forksafe

log = logging.getLogger("workers.entry")


def run_worker(settings: Settings, *, queues: Sequence[str] = (), burst: bool = False, simple: bool = False) -> int:
    """Work the named queues (all when none are named) until stopped, or until they are empty
    with ``burst``; ``simple`` runs jobs in this process instead of a forked work-horse.
    The webhook keys were checked by the caller (a configured key that fails to load refuses)."""
    configure_logging()
    # A stuck job is diagnosed from outside: SIGUSR1 to the worker or a work-horse (which
    # inherits this) writes every thread's stack to stderr, and the process goes on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    forksafe.install()  # first: its wait runs last before each fork, after the SQLite guard's
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
    start_reconciler(ctx, stop)
    start_webhook_dispatcher(ctx, stop)
    try:
        worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
    finally:
        stop.set()
        ctx.close()
    return 0


def start_webhook_dispatcher(ctx: context.WorkerContext, stop: threading.Event) -> threading.Thread | None:
    """The webhook dispatcher, a thread of the worker's main process, on clients of its own
    (``context.ThreadClients``). Without ``webhooks.secret_keys`` there is nothing to sign
    with: it does not start, and says so loudly if endpoints exist."""
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
    clients = context.build_thread_clients(settings)
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


def start_reconciler(ctx: context.WorkerContext, stop: threading.Event) -> threading.Thread:
    """The reconciler and the audit journal's replayer, threads of the worker's main process,
    on clients of their own (``context.ThreadClients``: a work-horse forked while one of them
    was in an S3 call or a journal replay would otherwise inherit that client half used, and
    hang on it). Until ``stop`` is set."""
    settings = ctx.settings
    clients = context.build_thread_clients(settings, with_store=True)
    replayer = clients.audit.start_replayer(settings.audit.replay_interval_seconds, stop)

    def run() -> None:
        try:
            _reconcile_forever(settings, ctx.queue, clients, stop)
        finally:
            replayer.join(30)
            clients.close()

    thread = threading.Thread(target=run, name="reconciler", daemon=True)
    thread.start()
    return thread


def _reconcile_forever(
    settings: Settings, queue: JobQueue, clients: context.ThreadClients, stop: threading.Event
) -> None:
    """Re-enqueue uploads that lost their job (Redis down at accept time, a killed worker)."""
    interval = settings.queue.reconcile_interval_seconds
    while not stop.is_set():
        try:
            report = reconcile(settings, clients.sessions, queue, store=clients.store, audit=clients.audit)
            if report.changed:
                log.info(report.summary())
        except Exception:  # noqa: BLE001 - keep reconciling after a failed round
            log.warning("reconcile round failed", exc_info=True)
        stop.wait(interval)
