"""The routes for browser and mobile clients answer only what the OpenAPI document declares
(the same check as test_openapi_contract, on the token, limits and artifact-link routes)."""

from __future__ import annotations

from typing import Any

import httpx

from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.integration.contract import check_against


def test_token_limits_and_link_statuses_are_documented(server: LiveServer, schema: dict[str, Any]) -> None:
    writer = server.client(scopes="upload,read")
    reader = server.client(scopes="read", tenant=writer.tenant)
    token = writer.request("POST", "/v1/upload-tokens", json={"max_uploads": 1}).json()["token"]
    page = Client(server, token, writer.tenant)
    by_key = writer.upload(samples.png_bytes(), "a.png").json()["id"]
    cases = [
        (lambda: writer.request("POST", "/v1/upload-tokens", json={}), 201),
        (lambda: writer.request("POST", "/v1/upload-tokens", json={"ttl_seconds": 99999}), 422),
        (lambda: reader.request("POST", "/v1/upload-tokens", json={}), 403),
        (lambda: httpx.post(server.url + "/v1/upload-tokens", json={}), 401),
        (lambda: page.request("GET", "/v1/limits"), 200),
        (lambda: httpx.get(server.url + "/v1/limits"), 401),
        (lambda: page.upload(samples.png_bytes(), "p.png"), 202),
        (lambda: page.upload(samples.png_bytes(), "q.png"), 403),
        (lambda: page.request("GET", f"/v1/uploads/{by_key}"), 404),
        (lambda: writer.request("GET", f"/v1/uploads/{by_key}/artifacts/nope", params={"redirect": "false"}), 404),
    ]
    for send, status in cases:
        response = send()
        assert response.status_code == status, (response.request.url.path, response.text[:300])
        check_against(schema, response)
    link = schema["paths"]["/v1/uploads/{upload_id}/artifacts/{name}"]["get"]["responses"]
    assert {"200", "307"} <= set(link)
