"""Liveness, readiness and composite health."""

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
    return await _report(services.readiness_checks())


@router.get("/health")
async def health(services: ServicesDep) -> JSONResponse:
    return await _report(services.health_checks())


async def _report(checks: dict) -> JSONResponse:  # type: ignore[type-arg]
    results = await run_checks(checks)
    healthy = all(r.ok for r in results)
    body = {"status": "ok" if healthy else "degraded", "checks": {r.name: r.as_dict() for r in results}}
    return JSONResponse(body, status_code=200 if healthy else 503, headers={"Cache-Control": "no-store"})
