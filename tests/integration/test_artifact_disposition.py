"""Presigned artifact URLs download instead of rendering at the object store's origin: the
real S3 server (SeaweedFS) answers them with ``Content-Disposition: attachment`` — signed into
the URL, so it can't be edited out — and raster images stay inline."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tests import samples
from tests.fixtures.app import LiveServer
from tests.fixtures.workers import run_jobs_in_process, wait_for_status
from upload_service.settings import StorageSettings
from upload_service.storage.s3 import S3ObjectStore


@pytest.mark.parametrize(
    "name,content_type,disposition",
    [
        ("sanitized.pdf", "application/pdf", 'attachment; filename="sanitized.pdf"'),
        ("info.json", "application/json", 'attachment; filename="info.json"'),
        ("manifest.json", "application/json", 'attachment; filename="manifest.json"'),
        ("sanitized.png", "image/png", 'inline; filename="sanitized.png"'),
        ("thumb-256.webp", "image/webp", 'inline; filename="thumb-256.webp"'),
    ],
)
def test_presigned_urls_carry_their_disposition(
    s3_settings: StorageSettings, name: str, content_type: str, disposition: str
) -> None:
    store = S3ObjectStore(s3_settings)
    data = b"%PDF-1.4 not really" if name.endswith(".pdf") else b"{}"
    key = f"acme/u1/{name}"
    store.put_bytes(s3_settings.artifacts_bucket, key, data, content_type=content_type, sha256=hashlib.sha256(data).hexdigest())
    url = store.presign_get(s3_settings.artifacts_bucket, key, ttl_seconds=60)
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["content-disposition"] == disposition
    assert response.headers["content-type"] == content_type
    # The disposition is part of the signature: dropping or changing it is refused.
    query = parse_qs(urlparse(url).query)
    assert query["response-content-disposition"] == [disposition]
    tampered = url.replace("attachment", "inline") if "attachment" in url else url.replace("inline", "attachment")
    assert httpx.get(tampered, timeout=10).status_code == 403


def test_the_api_hands_out_a_sanitized_pdf_as_a_download(server: LiveServer) -> None:
    client = server.client()
    upload = client.upload(samples.pdf_bytes(), "report.pdf", "application/pdf")
    assert upload.status_code == 202, upload.text
    run_jobs_in_process(server)
    record = wait_for_status(client, upload.json()["id"], {"done"})
    names = {a["name"] for a in record["artifacts"]}
    assert "sanitized.pdf" in names
    redirect = client.request("GET", f"/v1/uploads/{record['id']}/artifacts/sanitized.pdf")
    assert redirect.status_code == 307
    response = httpx.get(redirect.headers["location"], timeout=10)
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="sanitized.pdf"'
    assert response.content.startswith(b"%PDF")
