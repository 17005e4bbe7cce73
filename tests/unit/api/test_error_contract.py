"""The error contract in-process, for failures a live server can't be made to produce on
purpose: an unhandled exception must answer 500 INTERNAL without leaking its text."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from upload_service.app import create_app
from upload_service.settings import Settings


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def app(tmp_path: Path):  # type: ignore[no-untyped-def]
    app = create_app(Settings(spool={"dir": tmp_path}, storage={"backend": "local", "local_dir": tmp_path / "o"}))

    async def explode() -> None:
        raise RuntimeError("secret detail at /srv/private/path")

    app.add_api_route("/boom", explode)
    return app


async def test_unhandled_error_is_500_internal_without_details(app) -> None:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/boom", headers={"X-Request-ID": "trace-abcdefgh"})
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "INTERNAL", "message": "internal error", "request_id": "trace-abcdefgh", "details": None}
    }
    assert response.headers["x-request-id"] == "trace-abcdefgh"
    assert "secret" not in response.text and "Traceback" not in response.text


async def test_request_ids_are_generated_when_missing_or_invalid(app) -> None:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        missing = await client.get("/nowhere")
        invalid = await client.get("/nowhere", headers={"X-Request-ID": "has spaces and ; semicolons"})
    for response in (missing, invalid):
        assert response.status_code == 404
        request_id = response.headers["x-request-id"]
        assert len(request_id) == 32 and response.json()["error"]["request_id"] == request_id
