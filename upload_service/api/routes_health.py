"""Liveness, readiness and composite health.

``/livez``: the process serves. ``/readyz``: this node can serve (its spool, its DB pool), with
verdicts only. ``/health``: every dependency with details, for the internal listener.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from upload_service.api.deps import ServicesDep
from upload_service.health import run_checks

router = APIRouter(tags=["health"])


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """Node-local readiness; reachable publicly, so it names checks and verdicts only."""
    return await _report(services.readiness_checks(), public=True)


@router.get("/health")
async def health(services: ServicesDep) -> JSONResponse:
    """Every dependency with latency and detail: served by nginx only on its internal listener."""
    return await _report(services.health_checks(), public=False)


async def _report(checks: dict, *, public: bool) -> JSONResponse:  # type: ignore[type-arg]
    results = await run_checks(checks)
    healthy = all(r.ok for r in results)
    body = {
        "status": "ok" if healthy else "degraded",
        "checks": {r.name: r.as_public_dict() if public else r.as_dict() for r in results},
    }
    return JSONResponse(body, status_code=200 if healthy else 503, headers={"Cache-Control": "no-store"})
