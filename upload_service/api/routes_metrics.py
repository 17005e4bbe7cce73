"""``/metrics`` in the Prometheus text format (nginx keeps it off the public listener).

Under ``serve --workers N`` whichever process answers merges every API process's series
(``ApiMetrics.scrape_registry``), so any scrape shows the whole server."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from upload_service.api.deps import ServicesDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.scrape_registry), media_type=CONTENT_TYPE_LATEST)
