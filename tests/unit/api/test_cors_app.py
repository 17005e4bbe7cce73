"""CORS is the app's outermost layer: even an unhandled error's 500 carries the header, so a
page reads the JSON error instead of an opaque network error."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from upload_service.app import create_app
from upload_service.settings import Settings

pytestmark = pytest.mark.anyio
ALLOWED = "https://app.example.test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def app_with(tmp_path: Path, origins: list[str]):  # type: ignore[no-untyped-def]
    settings = Settings(
        spool={"dir": tmp_path}, storage={"backend": "local", "local_dir": tmp_path / "o"}, cors={"allow_origins": origins}
    )
    app = create_app(settings)

    async def explode() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/boom", explode)
    return app


async def test_an_unhandled_500_carries_the_allow_origin_header(tmp_path: Path) -> None:
    transport = httpx.ASGITransport(app=app_with(tmp_path, [ALLOWED]), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        allowed = await client.get("/boom", headers={"Origin": ALLOWED})
        other = await client.get("/boom", headers={"Origin": "https://other.test"})
    assert allowed.status_code == 500 and allowed.json()["error"]["code"] == "INTERNAL"
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "x-request-id" in allowed.headers["access-control-expose-headers"].lower()
    assert other.status_code == 500 and "access-control-allow-origin" not in other.headers


async def test_without_origins_there_is_no_cors_layer(tmp_path: Path) -> None:
    transport = httpx.ASGITransport(app=app_with(tmp_path, []), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/boom", headers={"Origin": ALLOWED})
    assert response.status_code == 500 and "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("origin", ["*", "https://*.example.test", "https://app.example.test/", "HTTPS://APP.TEST", "app.test"])
def test_origins_must_be_exact(origin: str) -> None:
    with pytest.raises(ValueError):
        Settings(cors={"allow_origins": [origin]})
