"""The OpenAPI document against what the real API (and the real nginx front) answers.

Each request below produces a status on a route; the test then checks, on the document the
server itself serves, that the status is documented on that operation, that an error body
validates against the documented ``ErrorResponse`` schema, and that its ``code`` is one the
document lists for that status. A new status a route starts answering, undocumented, fails here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from tests import samples
from tests.fixtures.app import LiveServer
from tests.fixtures.nginx import NginxFront
from tests.integration.contract import check_against
from upload_service.nginxconf import CSP

Send = Callable[[], httpx.Response]


def test_every_status_the_api_answers_is_documented(server: LiveServer, schema: dict[str, Any]) -> None:
    writer = server.client(scopes="upload,read")
    admin = server.client(scopes="upload,read,admin", tenant=writer.tenant)
    reader = server.client(scopes="read", tenant=writer.tenant)
    upload_id = writer.upload(samples.png_bytes(), "a.png").json()["id"]
    doomed = writer.upload(samples.png_bytes(9, 9), "b.png").json()["id"]
    key = f"k-{uuid.uuid4().hex}"
    nobody = {"Authorization": "Bearer nope"}
    url = server.url

    cases: list[tuple[Send, int]] = [
        (lambda: writer.upload(samples.png_bytes(7, 7), "c.png", headers={"Idempotency-Key": key}), 202),
        (lambda: writer.upload(samples.png_bytes(8, 8), "c.png", headers={"Idempotency-Key": key}), 409),
        (lambda: httpx.post(url + "/v1/uploads", content=b"x", headers=nobody), 401),
        (lambda: reader.upload(samples.png_bytes(), "a.png"), 403),
        (lambda: writer.upload(b"", "a.png"), 400),
        (lambda: writer.upload(samples.html_bytes(), "a.png", "image/png"), 415),
        (lambda: writer.request("POST", "/v1/uploads", content=samples.png_bytes() + b"\0" * (21 * 1024 * 1024),
                                headers={"Content-Type": "image/png"}), 413),
        (lambda: writer.request("POST", "/v1/uploads", params={"filename": "x" * 2000},
                                content=samples.png_bytes(), headers={"Content-Type": "image/png"}), 422),
        (lambda: writer.request("GET", f"/v1/uploads/{upload_id}"), 200),
        (lambda: writer.request("GET", "/v1/uploads/nope"), 404),
        (lambda: httpx.get(f"{url}/v1/uploads/{upload_id}", headers=nobody), 401),
        (lambda: writer.request("PATCH", f"/v1/uploads/{upload_id}", json={"tags": ["a"]}), 200),
        (lambda: writer.request("PATCH", f"/v1/uploads/{upload_id}", json={}), 400),
        (lambda: writer.request("PATCH", f"/v1/uploads/{upload_id}", json={"color": "red"}), 422),
        (lambda: writer.request("PATCH", "/v1/uploads/nope", json={"tags": ["a"]}), 404),
        (lambda: reader.request("PATCH", f"/v1/uploads/{upload_id}", json={"tags": ["a"]}), 403),
        (lambda: writer.request("DELETE", f"/v1/uploads/{doomed}"), 204),
        (lambda: writer.request("DELETE", f"/v1/uploads/{doomed}"), 404),
        (lambda: writer.request("GET", f"/v1/uploads/{upload_id}/artifacts/nope"), 404),
        (lambda: admin.request("GET", "/v1/audit", params={"limit": 5}), 200),
        (lambda: admin.request("GET", "/v1/audit", params={"cursor": "garbage"}), 400),
        (lambda: admin.request("GET", "/v1/audit", params={"limit": 0}), 422),
        (lambda: writer.request("GET", "/v1/audit"), 403),
        (lambda: httpx.get(url + "/livez"), 200),
        (lambda: httpx.get(url + "/readyz"), 200),
        (lambda: writer.request("POST", "/v1/upload-tokens", json={"max_uploads": 2}), 201),
        (lambda: writer.request("POST", "/v1/upload-tokens", json={"max_uploads": "many"}), 422),
        (lambda: reader.request("POST", "/v1/upload-tokens", json={}), 403),
        (lambda: writer.request("GET", "/v1/limits"), 200),
        (lambda: httpx.get(url + "/v1/limits", headers=nobody), 401),
    ]
    seen = []
    for send, status in cases:
        response = send()
        assert response.status_code == status, (response.request.method, response.request.url.path, response.text[:300])
        seen.append(check_against(schema, response))
    assert len(set(seen)) == len(seen), "two cases prove the same thing"


def test_load_shedding_and_an_unready_node_are_documented(server_factory: Any) -> None:
    full = server_factory(spool={"min_free_bytes": 1 << 60})  # no disk has that much free
    schema = httpx.get(full.url + "/openapi.json", timeout=10).json()
    client = full.client()
    refused = client.upload(samples.png_bytes(), "a.png")
    unready = httpx.get(full.url + "/readyz", timeout=10)
    assert (refused.status_code, unready.status_code) == (507, 503)
    for response in (refused, unready):
        check_against(schema, response)
    assert refused.headers["retry-after"]


def test_what_nginx_answers_itself_is_documented(front: NginxFront, server: LiveServer, schema: dict[str, Any]) -> None:
    client = server.client()
    with front.variant(api_rate="1r/m", api_burst=0, max_json_body_bytes=2048) as tight:
        path = "/v1/uploads/nope"
        first = httpx.get(tight.url + path, headers=client.headers, timeout=10)
        limited = httpx.get(tight.url + path, headers=client.headers, timeout=10)
        too_large = httpx.patch(tight.url + path, content=b"[" + b" " * 4096 + b"]",
                                headers={**client.headers, "Content-Type": "application/json"}, timeout=10)
        huge_header = httpx.get(tight.url + path, headers={**client.headers, "X-Big": "x" * 9000}, timeout=10)
    assert (first.status_code, limited.status_code, too_large.status_code, huge_header.status_code) == (404, 429, 413, 431)
    for response in (first, limited, too_large, huge_header):
        check_against(schema, response)


def test_the_docs_ui_is_not_public_but_is_internal(front: NginxFront, server: LiveServer) -> None:
    from upload_service.devstack.process import free_port

    internal = f"127.0.0.1:{free_port()}"
    with front.variant(internal_listen=internal) as both:
        for path in ("/docs", "/openapi.json"):
            assert httpx.get(both.url + path, timeout=10).status_code == 404
            inside = httpx.get(f"http://{internal}{path}", timeout=10)
            assert inside.status_code == 200, (path, inside.text[:200])
        page = httpx.get(f"http://{internal}/docs", timeout=10)
        assert "<redoc spec-url=\"/openapi.json\">" in page.text
        # The page's strict CSP allows exactly what it loads: its script's origin, no inline script.
        policy = dict(p.strip().split(" ", 1) for p in page.headers["content-security-policy"].split(";"))
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
        assert scripts and all(not body.strip() for _, body in scripts)
        for attributes, _ in scripts:
            src = re.search(r'src="(https://[^/"]+)/', attributes)
            assert src and src.group(1) in policy["script-src"].split(), attributes
        assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
        public_page = httpx.get(both.url + "/livez", timeout=10)
        assert public_page.headers["content-security-policy"] == CSP  # the strict one everywhere else
