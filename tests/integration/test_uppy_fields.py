"""Uppy-style forms: each text part besides ``file`` and ``metadata`` becomes a metadata key
(Uppy's XHRUpload sends every meta field as its own part); bounded in count and size, with the
``metadata`` JSON winning; ``files[]`` (Uppy's bundle mode) is refused with a message that says
what to send instead."""

from __future__ import annotations

import json

import pytest

from tests import samples
from tests.fixtures.app import Client, LiveServer
from tests.integration.contract import assert_error



def assert_nothing_left(server: LiveServer, client: Client) -> None:
    assert server.wait_for_empty_spool() == []
    assert client.upload_count() == 0


def test_uppy_meta_fields_become_metadata(client: Client) -> None:
    # What Uppy's XHRUpload sends by default: name, type, relativePath (null), then user meta.
    fields = {"name": "photo.png", "type": "image/png", "relativePath": "null", "caption": "Ünïcode ✓"}
    response = client.upload(samples.png_bytes(), "photo.png", "image/png", data=fields)
    assert response.status_code == 202, response.text
    assert response.json()["metadata"] == fields
    stored = client.request("GET", f"/v1/uploads/{response.json()['id']}").json()
    assert stored["metadata"] == fields


def test_the_metadata_json_wins_over_fields_of_the_same_name(client: Client) -> None:
    data = {"album": "from-field", "metadata": json.dumps({"album": "from-json", "n": 1}), "extra": "kept"}
    response = client.upload(samples.png_bytes(), "a.png", data=data)
    assert response.status_code == 202, response.text
    assert response.json()["metadata"] == {"album": "from-json", "n": 1, "extra": "kept"}


def test_a_plain_upload_still_has_no_metadata(client: Client) -> None:
    assert client.upload(samples.png_bytes(), "a.png").json()["metadata"] is None


@pytest.mark.parametrize(
    "data, loc",
    [
        ({"caption": "x" * 4097}, ["body", "caption"]),
        ({"metadata": json.dumps({"blob": "y" * 60_000}), "a": "z" * 4096, "b": "z" * 4096}, ["body", "metadata"]),
    ],
)
def test_values_past_the_bounds_are_422(server: LiveServer, client: Client, data: dict, loc: list) -> None:  # type: ignore[type-arg]
    error = assert_error(client.upload(samples.png_bytes(), "a.png", data=data), 422, "VALIDATION_FAILED")
    assert error["details"][0]["loc"] == loc
    assert_nothing_left(server, client)


def test_a_value_that_is_not_utf8_is_422(server: LiveServer, client: Client) -> None:
    boundary = "b0und4ry"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"caption\"\r\n\r\n".encode() + b"\xff\xfe\r\n"
        + f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n".encode()
        + samples.png_bytes() + f"\r\n--{boundary}--\r\n".encode()
    )
    response = client.request(
        "POST", "/v1/uploads", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    error = assert_error(response, 422, "VALIDATION_FAILED")
    assert error["details"][0]["loc"] == ["body", "caption"]
    assert_nothing_left(server, client)


def test_too_many_fields_and_repeated_fields_are_400(server: LiveServer, client: Client) -> None:
    parts = server.settings.limits.max_multipart_parts
    many = {f"f{i}": "v" for i in range(parts)}  # plus the file part: one over
    error = assert_error(client.upload(samples.png_bytes(), "a.png", data=many), 400, "MALFORMED_MULTIPART")
    assert f"more than {parts} parts" in error["message"]
    repeated = client.upload(samples.png_bytes(), "a.png", data={"tag": ["a", "b"]})
    assert "repeated" in assert_error(repeated, 400, "MALFORMED_MULTIPART")["message"]
    assert_nothing_left(server, client)


def test_uppy_bundle_mode_files_array_is_refused_with_what_to_send(server: LiveServer, client: Client) -> None:
    response = client.request("POST", "/v1/uploads", files={"files[]": ("a.png", samples.png_bytes(), "image/png")})
    error = assert_error(response, 400, "MISSING_FILE")
    assert "'file'" in error["message"] and "files[]" in error["message"] and "bundle: false" in error["message"]
    assert_nothing_left(server, client)
