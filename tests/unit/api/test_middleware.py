"""The request id and request counting middleware in-process: one ``X-Request-ID`` on every
answer, and every answer counted under its route template and status."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import generate_latest

from upload_service.app import create_app
from upload_service.metrics import ApiMetrics
from upload_service.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    app = create_app(Settings(spool={"dir": tmp_path}, storage={"backend": "local", "local_dir": tmp_path / "o"}))
    app.state.services = SimpleNamespace(metrics=ApiMetrics())  # what HttpMetricsMiddleware reads

    async def thing(thing_id: str) -> dict[str, str]:
        if thing_id == "broken":
            raise RuntimeError("broken thing")
        return {"id": thing_id}

    app.add_api_route("/things/{thing_id}", thing)
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_every_answer_carries_one_request_id(app: FastAPI) -> None:
    async with client(app) as http:
        ok = await http.get("/livez", headers={"X-Request-ID": "trace-abcdefgh"})
        refused = await http.get("/nowhere", headers={"X-Request-ID": "trace-ijklmnop"})
        generated = await http.get("/livez")
    assert ok.status_code == 200 and ok.headers.get_list("x-request-id") == ["trace-abcdefgh"]
    assert refused.status_code == 404 and refused.headers.get_list("x-request-id") == ["trace-ijklmnop"]
    assert refused.json()["error"]["request_id"] == "trace-ijklmnop"
    (request_id,) = generated.headers.get_list("x-request-id")
    assert len(request_id) == 32 and request_id != ok.headers["x-request-id"]


def sample(app: FastAPI, **labels: str) -> float:
    registry = app.state.services.metrics.registry
    value = registry.get_sample_value("upload_http_requests_total", labels)
    return value or 0.0


async def test_requests_are_counted_by_method_route_template_and_status(app: FastAPI) -> None:
    async with client(app) as http:
        for _ in range(3):
            assert (await http.get("/livez")).status_code == 200
        assert (await http.get("/things/abc")).status_code == 200
        assert (await http.get("/things/def")).status_code == 200
        assert (await http.get("/things/broken")).status_code == 500
        assert (await http.get("/nowhere")).status_code == 404
        assert (await http.request("BREW", "/livez")).status_code == 405
    assert sample(app, method="GET", route="/livez", status="200") == 3
    assert sample(app, method="GET", route="/things/{thing_id}", status="200") == 2
    assert sample(app, method="GET", route="/things/{thing_id}", status="500") == 1
    assert sample(app, method="GET", route="unmatched", status="404") == 1
    assert sample(app, method="other", route="/livez", status="405") == 1
    exposed = generate_latest(app.state.services.metrics.registry).decode()
    assert 'upload_http_requests_total{method="GET",route="/livez",status="200"} 3.0' in exposed
