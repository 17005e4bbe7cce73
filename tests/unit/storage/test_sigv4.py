"""The accept path's own SigV4 signer gives, header for header, what botocore's ``S3SigV4Auth``
gives for the same request at the same instant: generated URLs (path and virtual-host style,
default and other ports, IPv6, part query strings), headers (runs of spaces, unsigned ones,
an ``Authorization`` left from an earlier attempt) and credentials (with and without a session
token), across a change of day (the kept signing key is renewed)."""

from __future__ import annotations

import datetime
import random
import string
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

from upload_service.storage.sigv4 import SigV4Signer

HOSTS = [
    "http://127.0.0.1:8333",
    "http://localhost:80",
    "https://s3.eu-west-1.amazonaws.com",
    "https://bkt.s3.example.com:443",
    "https://bkt.s3.example.com:8443",
    "http://[::1]:9000",
    "http://S3.Example.COM:9000",
]
KEY_CHARS = string.ascii_letters + string.digits + "._-/~"


class _KnownPayload(S3SigV4Auth):
    """botocore's signer, told the payload hash (as the accept path tells its own)."""

    def payload(self, request: AWSRequest) -> str:
        return str(request.context["payload_sha256"])


def botocore_signed(
    credentials: ReadOnlyCredentials, region: str, method: str, url: str, headers: dict[str, str], payload: str,
    at: datetime.datetime, monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: at)
    request = AWSRequest(method=method, url=url, headers=dict(headers))
    request.context["payload_sha256"] = payload
    _KnownPayload(Credentials(*credentials), "s3", region).add_auth(request)
    return {name.lower(): value for name, value in request.headers.items()}


def ours_signed(signer: SigV4Signer, credentials: ReadOnlyCredentials, method: str, url: str,
                headers: dict[str, str], payload: str, at: datetime.datetime) -> dict[str, str]:
    signed = signer.sign(credentials, method, url, headers, payload, at=at.timestamp())
    return {name.lower(): value for name, value in signed.items()}


def generated_request(rng: random.Random) -> tuple[str, str, dict[str, str], str]:
    key = "".join(rng.choice(KEY_CHARS) for _ in range(rng.randint(1, 40))).strip("/") or "k"
    url = f"{rng.choice(HOSTS)}/bkt/{key}"
    if rng.random() < 0.5:
        params = [f"partNumber={rng.randint(1, 10000)}", f"uploadId={rng.choice(['abc', 'A%2FB%3D', 'x_y-z'])}"]
        rng.shuffle(params)
        url += "?" + "&".join(params)
    headers: dict[str, Any] = {
        "Content-Type": rng.choice(["image/png", "application/pdf", "text/plain;  charset=utf-8"]),
        "Content-Length": str(rng.randint(0, 10**8)),
        "x-amz-checksum-sha256": "".join(rng.choice(string.ascii_letters) for _ in range(43)) + "=",
    }
    if rng.random() < 0.3:
        headers["x-amz-meta-note"] = "  spaced   out  value "
    if rng.random() < 0.3:
        headers["User-Agent"] = "not signed/1.0"
    if rng.random() < 0.3:
        headers["Expect"] = "100-continue"
    if rng.random() < 0.2:
        headers["Authorization"] = "AWS4-HMAC-SHA256 left from an earlier attempt"
    payload = rng.choice(["STREAMING-UNSIGNED-PAYLOAD-TRAILER", f"{rng.getrandbits(256):064x}"])
    return rng.choice(["PUT", "put", "POST"]), url, headers, payload


@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzE//session+token="])
def test_the_signature_is_botocores(token: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261130)
    credentials = ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    signer = SigV4Signer("eu-west-1")
    at = datetime.datetime(2026, 11, 30, 23, 59, 50, tzinfo=datetime.UTC)
    for number in range(200):
        instant = at + datetime.timedelta(seconds=number)  # crosses midnight: a new day's key
        method, url, headers, payload = generated_request(rng)
        expected = botocore_signed(credentials, "eu-west-1", method, url, headers, payload, instant, monkeypatch)
        assert ours_signed(signer, credentials, method, url, headers, payload, instant) == expected, url
    assert "x-amz-security-token" in expected if token else "x-amz-security-token" not in expected


def test_other_credentials_or_bytes_give_another_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept key belongs to one secret: a rotated secret is signed with its own key."""
    at = datetime.datetime(2026, 11, 30, 12, tzinfo=datetime.UTC)
    signer = SigV4Signer("us-east-1")
    url, headers = "http://127.0.0.1:8333/bkt/t/u/original", {"Content-Length": "3"}
    first = ReadOnlyCredentials("AKID", "secret-one", None)
    rotated = ReadOnlyCredentials("AKID", "secret-two", None)
    one = ours_signed(signer, first, "PUT", url, headers, "0" * 64, at)
    two = ours_signed(signer, rotated, "PUT", url, headers, "0" * 64, at)
    other_bytes = ours_signed(signer, rotated, "PUT", url, headers, "1" * 64, at)
    assert len({one["authorization"], two["authorization"], other_bytes["authorization"]}) == 3
    assert two == botocore_signed(rotated, "us-east-1", "PUT", url, headers, "0" * 64, at, monkeypatch)
