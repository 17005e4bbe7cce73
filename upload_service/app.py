"""``create_app(settings)``: the ASGI application. Concrete clients are built in its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from upload_service.api import routes_audit, routes_health, routes_metrics, routes_uploads
from upload_service.api.errors import install_error_handlers
from upload_service.api.httpmetrics import HttpMetricsMiddleware
from upload_service.api.openapi import install_openapi
from upload_service.api.requestid import RequestIdMiddleware
from upload_service.container import build_services
from upload_service.ingest.spool import remove_stale_parts
from upload_service.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.prepare_dirs()
        remove_stale_parts(settings.spool.dir)
        services = build_services(settings)
        services.start_background()
        app.state.services = services
        try:
            yield
        finally:
            services.close()

    app = FastAPI(
        title="upload-service",
        version="1.0",
        lifespan=lifespan,
        docs_url="/docs",  # Swagger UI; nginx serves it on the internal listener only
        redoc_url=None,
    )
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(routes_uploads.router)
    app.include_router(routes_audit.router)
    app.include_router(routes_health.router)
    app.include_router(routes_metrics.router)
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app


def app_factory() -> FastAPI:
    """For ``uvicorn --factory upload_service.app:app_factory``: settings from the environment."""
    return create_app(Settings())
