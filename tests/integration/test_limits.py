"""``GET /v1/limits`` tells a page what the ingest will enforce on it, before a byte is sent:
the values come from the same settings (narrowed by the caller's upload token), and the ingest
agrees at the boundary."""

from __future__ import annotations

import httpx

from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.integration.contract import assert_error



def test_limits_of_an_api_key_are_the_settings(server: LiveServer, client: Client) -> None:
    limits = server.settings.limits
    body = client.request("GET", "/v1/limits").json()
    assert body["allowed_types"] == limits.allowed_types
    by_type = {t["type"]: t for t in body["types"]}
    assert by_type["image/png"]["max_bytes"] == limits.max_image_bytes
    assert by_type["application/pdf"]["max_bytes"] == limits.max_pdf_bytes
    assert by_type["image/jpeg"]["extensions"] == sorted([".jpe", ".jpeg", ".jfif", ".jpg", ".pjp", ".pjpeg"])
    assert body["max_body_bytes"] == limits.max_body_bytes
    assert body["max_filename_chars"] == limits.max_filename_chars
    assert body["max_file_bytes"] == max(limits.max_image_bytes, limits.max_pdf_bytes)
    assert body["file_field"] == "file" and body["max_form_parts"] == limits.max_multipart_parts
    assert body["max_uploads"] is None and body["expires_at"] is None
    # Ready for Uppy's `restrictions` and an <input accept>.
    assert body["uppy"]["maxFileSize"] == body["max_file_bytes"]
    assert "image/png" in body["uppy"]["allowedFileTypes"] and ".pdf" in body["uppy"]["allowedFileTypes"]
    assert body["accept"].split(",") == body["uppy"]["allowedFileTypes"]
    assert_error(httpx.get(server.url + "/v1/limits"), 401, "UNAUTHENTICATED")


def test_limits_of_a_token_are_its_narrowing_and_the_ingest_agrees(server: LiveServer, client: Client) -> None:
    big = samples.noisy_jpeg_bytes(100, 100)
    minted = client.request(
        "POST", "/v1/upload-tokens", json={"allowed_types": ["image/jpeg"], "max_bytes": len(big), "max_uploads": 3}
    ).json()
    page = Client(server, minted["token"], client.tenant)
    body = page.request("GET", "/v1/limits").json()
    assert body["allowed_types"] == ["image/jpeg"]
    assert body["types"][0]["max_bytes"] == len(big) == body["max_file_bytes"] == body["uppy"]["maxFileSize"]
    assert body["uppy"]["maxNumberOfFiles"] == 3 and body["max_uploads"] == 3
    assert body["expires_at"].startswith(minted["expires_at"][:16])
    assert ".png" not in body["accept"]
    # Exactly the limit passes; one byte more does not; another type does not.
    assert page.upload(big, "ok.jpg").status_code == 202
    over = page.upload(big + b"\0", "over.jpg")
    assert assert_error(over, 413, "FILE_TOO_LARGE")["details"] == {"limit_bytes": len(big)}
    assert_error(page.upload(samples.png_bytes(), "a.png"), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert server.wait_for_empty_spool() == []
