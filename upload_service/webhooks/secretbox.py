"""Endpoint signing secrets, encrypted at rest with AES-256-GCM under the operator's keys.

Standard Webhooks signatures are HMACs, so the server needs each secret itself (a hash would
not do): it is stored as ``<key id>:<base64(nonce + ciphertext + tag)>``, the endpoint id bound
in as associated data (a ciphertext copied to another endpoint does not decrypt). The key id
names the ``webhooks.secret_keys`` entry that encrypted it, so keys rotate: add a key, make it
active, ``upload-service webhooks reencrypt``, then remove the old one.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from upload_service.secretkeys import load_secret_keys
from upload_service.settings import WebhookSettings

_NONCE_BYTES = 12


class WebhookKeyError(Exception):
    """No usable key for endpoint secrets (missing, short, unknown id, wrong key)."""


@dataclass(frozen=True)
class SecretBox:
    keys: dict[str, bytes] = field(repr=False)
    active_key_id: str

    def __repr__(self) -> str:
        return f"SecretBox(key_ids={sorted(self.keys)}, active={self.active_key_id!r})"

    def seal(self, endpoint_id: str, secret: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(self.keys[self.active_key_id]).encrypt(nonce, secret.encode(), endpoint_id.encode())
        return f"{self.active_key_id}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, endpoint_id: str, box: str) -> str:
        key_id, sep, data = box.partition(":")
        key = self.keys.get(key_id)
        if not sep or key is None:
            raise WebhookKeyError(f"no webhooks.secret_keys entry {key_id!r} to decrypt an endpoint secret")
        raw = base64.b64decode(data)
        try:
            return AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], endpoint_id.encode()).decode()
        except InvalidTag:
            raise WebhookKeyError(f"webhooks.secret_keys entry {key_id!r} does not decrypt this secret") from None

    def key_id_of(self, box: str) -> str:
        return box.partition(":")[0]


def keys_configured(settings: WebhookSettings) -> bool:
    return bool(settings.secret_keys) or settings.secret_keys_file is not None


def check_configured_keys(settings: WebhookSettings) -> None:
    """At start-up: keys that are configured must load (a bad file, a short key or an unknown
    active id refuses to start); none configured means webhooks are off, which is allowed."""
    if keys_configured(settings):
        load_secret_box(settings)


def load_secret_box(settings: WebhookSettings) -> SecretBox:
    """The keys of ``webhooks.secret_keys`` plus ``secret_keys_file``; refuses none or short ones."""
    found, active = load_secret_keys(
        settings.secret_keys, settings.secret_keys_file, settings.active_key_id,
        setting="webhooks.secret_keys", error=WebhookKeyError,
        missing="no webhook secret key: set webhooks.secret_keys "
        "(UPLOAD_WEBHOOKS__SECRET_KEYS='{\"k1\": \"<32+ random bytes>\"}') or webhooks.secret_keys_file",
    )
    # Any string of 32+ bytes is a key: SHA-256 makes it exactly the 32 bytes AES-256 takes.
    return SecretBox(keys={k: hashlib.sha256(v.encode()).digest() for k, v in found.items()}, active_key_id=active)
