"""``create_app(settings)``: the ASGI application. Concrete clients are built in its lifespan."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from contextlib import asynccontextmanager, contextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from upload_service.api import routes_audit, routes_health, routes_limits, routes_metrics, routes_tokens, routes_uploads
from upload_service.api import routes_webhooks
from upload_service.api.errors import install_error_handlers
from upload_service.api.httpmetrics import HttpMetricsMiddleware
from upload_service.api.openapi import install_openapi
from upload_service.api.lingering import LingeringCloseMiddleware
from upload_service.api.requestid import RequestIdMiddleware
from upload_service.container import Services, build_services
from upload_service.db import webhooks_repo
from upload_service.errors import StorageError
from upload_service.metrics import WebhookCollector
from upload_service.ingest.spool import remove_stale_parts
from upload_service.settings import CORS_ALLOW_HEADERS, CORS_ALLOW_METHODS, CORS_EXPOSE_HEADERS, CorsSettings, Settings
from upload_service.storage.base import ObjectStore
from upload_service.tokens import load_keyring
from upload_service.webhooks.secretbox import check_configured_keys

log = logging.getLogger(__name__)

#: Net allocations of container objects between two young-generation collections while the API
#: serves (CPython's default is 700: a collection every request or two under load).
YOUNG_COLLECTION_THRESHOLD = 7000


class _App(FastAPI):
    """FastAPI with CORS as the OUTERMOST layer (``cors.allow_origins``; none: no CORS at all).

    ``add_middleware`` would put it inside Starlette's ServerErrorMiddleware, so a 500 would
    reach a page without ``Access-Control-Allow-Origin`` and read as an opaque network error.
    """

    cors: CorsSettings | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if self.cors is None or not self.cors.allow_origins:
            return stack
        return CORSMiddleware(
            stack,
            allow_origins=self.cors.allow_origins,
            allow_methods=CORS_ALLOW_METHODS,
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
            allow_credentials=False,
            max_age=self.cors.max_age,
        )


@contextmanager
def start_up_heap_frozen() -> Iterator[None]:
    """While the API serves, the cyclic garbage collector skips what start-up built, and runs
    its young collections less often; both are undone when it stops.

    Every full collection walked the ~180,000 objects start-up leaves (botocore's models,
    SQLAlchemy's and pydantic's schemas, the routes), ~115 ms each with the event loop stopped
    (docs/architecture.md, "Python's cyclic garbage collector while serving"). The cost: a
    cycle of start-up's objects dropped later is never collected, and garbage cycles wait a
    little longer for a young collection."""
    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.prepare_dirs()
        remove_stale_parts(settings.spool.dir)
        app.state.token_keyring = load_keyring(settings.tokens)  # no secret: refuse to start
        services = build_services(settings)
        services.metrics.add_collector(webhook_collector(services))
        services.start_background()
        sweep_stale_originals(services.store, settings)
        app.state.services = services
        try:
            with start_up_heap_frozen():
                yield
        finally:
            await services.store.aclose()
            services.close()

    app = _App(
        title="upload-service",
        version="1.0",
        lifespan=lifespan,
        # The API reference: ReDoc (no inline script, so a strict CSP can allow it); nginx serves
        # it, and /openapi.json, on its internal listener only.
        docs_url=None,
        redoc_url="/docs",
        # FastAPI's native OpenTelemetry off: the service's signals are its Prometheus metrics,
        # JSON logs and audit trail, and with it on every request asks OpenTelemetry whether a
        # global provider is configured (~2 % of the event loop's CPU under load).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.cors = settings.cors
    install_error_handlers(app)
    install_openapi(app)
    # Probes first: routes are matched in the order they were included, and /livez and
    # /readyz are the most frequent requests that must stay cheap (~30 µs less each).
    app.include_router(routes_health.router)
    app.include_router(routes_uploads.router)
    app.include_router(routes_tokens.router)
    app.include_router(routes_limits.router)
    app.include_router(routes_audit.router)
    app.include_router(routes_webhooks.router)
    app.include_router(routes_metrics.router)
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(
        LingeringCloseMiddleware,
        max_body_bytes=settings.limits.max_body_bytes,
        linger_seconds=settings.server.linger_seconds,
        idle_seconds=settings.server.linger_idle_seconds,
    )
    return app


#: How long after an upload's body deadline its writer may still be finishing (the last part,
#: CompleteMultipartUpload, the row) before an unfinished one counts as abandoned.
STALE_WRITE_MARGIN_SECONDS = 300


def sweep_stale_originals(store: ObjectStore, settings: Settings) -> threading.Thread:
    """Abort, in the background, the originals a killed process left half-written (S3
    multipart uploads, local temporary files). Only those older than the body deadline plus a
    margin: every upload in flight, of this process or a sibling, is younger than that. S3
    being down only postpones this to the next start (and the bucket's lifecycle rule)."""
    older_than = settings.limits.max_body_seconds + STALE_WRITE_MARGIN_SECONDS

    def sweep() -> None:
        try:
            aborted = store.abort_stale_writes(settings.storage.originals_bucket, older_than_seconds=older_than)
        except StorageError:
            log.warning("could not sweep abandoned original uploads", exc_info=True)
            return
        if aborted:
            log.info("aborted %d abandoned original upload(s)", aborted)

    thread = threading.Thread(target=sweep, name="sweep-originals", daemon=True)
    thread.start()
    return thread


def webhook_collector(services: Services) -> WebhookCollector:
    """Webhook outcomes from Redis; the oldest pending delivery's age and the backlog from the DB."""

    def backlog() -> tuple[float, dict[str, int]]:
        with services.sessions() as session:
            oldest = webhooks_repo.oldest_pending_created_at(session)
            counts = webhooks_repo.count_by_status(session, ("pending", "dead"))
        age = (datetime.now(timezone.utc) - oldest).total_seconds() if oldest is not None else 0.0
        return max(age, 0.0), counts

    return WebhookCollector(services.redis, backlog)


def app_factory() -> FastAPI:
    """For ``uvicorn --factory upload_service.app:app_factory``: settings from the environment."""
    settings = Settings()
    load_keyring(settings.tokens)  # refuse now, with one clear line, rather than in the lifespan
    check_configured_keys(settings.webhooks)  # a configured but unusable webhook key: refuse too
    return create_app(settings)
