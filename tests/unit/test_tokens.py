"""Upload tokens, pure: mint → verify, and every way a token can be wrong is 401."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import pytest

from upload_service.errors import ErrorCode, ServiceError
from upload_service.settings import LimitSettings, TokenSettings
from upload_service.tokens import (
    Keyring,
    TokenKeyError,
    load_keyring,
    mint,
    narrow_limits,
    new_claims,
    verify,
)

NOW = 1_800_000_000.0
SECRET = secrets.token_urlsafe(32)


def keyring(**extra: str) -> Keyring:
    return load_keyring(TokenSettings(secrets={"k1": SECRET, **extra}, active_key_id="k1"))


def claims(**narrowing):  # type: ignore[no-untyped-def]
    return new_claims(
        tenant="acme", issuer_key_id="0123456789abcdef", now=NOW, settings=TokenSettings(), limits=LimitSettings(),
        **narrowing,
    )


def refused(ring: Keyring, token: str, now: float = NOW) -> str:
    with pytest.raises(ServiceError) as caught:
        verify(ring, token, now=now)
    assert caught.value.code is ErrorCode.UNAUTHENTICATED
    return caught.value.message


def test_a_minted_token_verifies_to_its_claims() -> None:
    ring = keyring()
    issued = claims(types=["image/png"], max_bytes=1000, max_uploads=3, metadata={"a": "b"}, tags=["x"])
    token = mint(ring, issued)
    assert token.startswith("ust_k1.")
    assert verify(ring, token, now=NOW + 1) == issued
    assert issued.expires_at == int(NOW) + 600 and len(issued.jti) == 32


def test_expired_at_exp_and_after() -> None:
    ring = keyring()
    token = mint(ring, claims(ttl_seconds=5))
    verify(ring, token, now=NOW + 4.9)
    assert refused(ring, token, NOW + 5) == "the upload token has expired"


def _parts(token: str) -> tuple[str, dict, str]:  # type: ignore[type-arg]
    head, payload, mac = token.split(".")
    return head, json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))), mac


def _encode(payload: dict) -> str:  # type: ignore[type-arg]
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "field, value",
    [
        ("tenant", "other"), ("jti", "f" * 32), ("iss", "fedcba9876543210"), ("iat", int(NOW) - 10),
        ("exp", int(NOW) + 3000), ("max_uploads", 99), ("types", ["application/pdf"]), ("max_bytes", 10**9),
        ("metadata", {"a": "c"}), ("tags", ["y"]), ("v", 2), ("extra", 1),
    ],
)
def test_each_payload_field_is_covered_by_the_mac(field: str, value: object) -> None:
    ring = keyring()
    head, payload, mac = _parts(mint(ring, claims(types=["image/png"], max_bytes=1000, metadata={"a": "b"}, tags=["x"])))
    payload[field] = value
    assert refused(ring, f"{head}.{_encode(payload)}.{mac}") == "the upload token is invalid"


def test_key_id_mac_and_shape_tampering() -> None:
    ring = keyring(k2=secrets.token_urlsafe(32))
    token = mint(ring, claims())
    head, payload, mac = token.split(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    last_bits = mac[:-1] + chr(ord(mac[-1]) ^ 1)  # may decode to the same bytes: still refused
    for bad in (
        f"ust_k2.{payload}.{mac}",  # another known key id
        f"ust_k9.{payload}.{mac}",  # an unknown key id
        f"{head}.{payload}.{flipped}",
        f"{head}.{payload}.{last_bits}",
        f"{head}.{payload}.",
        f"{head}.{payload}",
        f"{head}.{payload}x.{mac}",
        token.replace("ust_", "usk_"),
        token + "=",
        "ust_" + "a" * 5000,
    ):
        refused(ring, bad)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    other = load_keyring(TokenSettings(secrets={"k1": secrets.token_urlsafe(32)}))
    refused(keyring(), mint(other, claims()))


def test_rotation_old_key_verifies_until_removed() -> None:
    old_secret, new_secret = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    before = load_keyring(TokenSettings(secrets={"old": old_secret}))
    during = load_keyring(TokenSettings(secrets={"old": old_secret, "new": new_secret}, active_key_id="new"))
    after = load_keyring(TokenSettings(secrets={"new": new_secret}))
    old_token, new_token = mint(before, claims()), mint(during, claims())
    assert new_token.startswith("ust_new.")
    verify(during, old_token, now=NOW)
    verify(after, new_token, now=NOW)
    refused(after, old_token)


def test_keyring_refuses_missing_short_and_ambiguous_secrets(tmp_path: Path) -> None:
    with pytest.raises(TokenKeyError, match="no upload-token secret"):
        load_keyring(TokenSettings())
    with pytest.raises(ValueError, match="shorter than 32 bytes"):
        TokenSettings(secrets={"k1": "x" * 31})
    with pytest.raises(TokenKeyError, match="active_key_id"):
        load_keyring(TokenSettings(secrets={"a": "x" * 32, "b": "y" * 32}))
    short = tmp_path / "secrets"
    short.write_text("# comment\nk1=tooshort\n")
    with pytest.raises(TokenKeyError, match="shorter than 32 bytes"):
        load_keyring(TokenSettings(secrets_file=short))
    good = tmp_path / "good"
    good.write_text(f"k1={SECRET}\nk2={'z' * 40}\n")
    ring = load_keyring(TokenSettings(secrets_file=good, active_key_id="k2"))
    assert ring.active_key_id == "k2" and SECRET not in repr(ring)
    with pytest.raises(TokenKeyError, match="cannot be read"):
        load_keyring(TokenSettings(secrets_file=tmp_path / "missing"))


@pytest.mark.parametrize(
    "narrowing, field",
    [
        ({"ttl_seconds": 3601}, "ttl_seconds"), ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"types": ["text/html"]}, "allowed_types"), ({"types": []}, "allowed_types"),
        ({"max_bytes": 0}, "max_bytes"), ({"max_bytes": 51 * 1024 * 1024}, "max_bytes"),
        ({"max_uploads": 0}, "max_uploads"), ({"metadata": {"k": "v" * 3000}}, "metadata"),
        ({"tags": ["x"] * 21}, "tags"), ({"tags": [""]}, "tags"),
    ],
)
def test_narrowing_that_cannot_hold_is_422(narrowing: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ServiceError) as caught:
        claims(**narrowing)
    assert caught.value.code is ErrorCode.VALIDATION_FAILED
    assert caught.value.details[0]["loc"] == ["body", field]


def test_narrow_limits_intersects_types_and_caps_sizes() -> None:
    limits = LimitSettings()
    narrowed = narrow_limits(limits, claims(types=["application/pdf", "image/png"], max_bytes=1000))
    assert narrowed.allowed_types == ["image/png", "application/pdf"]
    assert narrowed.limit_for("image/png") == 1000 and narrowed.limit_for("application/pdf") == 1000
    assert narrow_limits(limits, claims()) is limits
    assert narrow_limits(limits, None) is limits
