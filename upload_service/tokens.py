"""Upload tokens: short-lived, tenant-bound, narrowed credentials a backend mints for a page or an
app. Pure: no DB, no framework, no clock of its own (``now`` is passed in).

A token looks like ``ust_<key id>.<payload>.<mac>``:

- ``key id`` names the server secret that signed it (``tokens.secrets``), in clear so the
  verifier picks the secret without parsing anything unauthenticated; secrets rotate by key id;
- ``payload`` is base64url (no padding) of a compact JSON object: ``v`` (format version),
  ``jti`` (128 random bits, the token's id), ``tenant``, ``iss`` (id of the API key that minted
  it), ``iat`` / ``exp`` (Unix seconds), ``max_uploads``, and the optional narrowing
  ``types``, ``max_bytes``, ``metadata``, ``tags``;
- ``mac`` is base64url of HMAC-SHA256(secret, ``ust_<key id>.<payload>``), compared in constant
  time before the payload is decoded.

Verifying needs no DB read. A token is not revocable before it expires (at most an hour): the
use count (``max_uploads``) is the only state, kept by the service.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upload_service.errors import ErrorCode, ServiceError
from upload_service.secretkeys import load_secret_keys
from upload_service.settings import TOKEN_KEY_ID, LimitSettings, TokenSettings

TOKEN_PREFIX = "ust_"
FORMAT_VERSION = 1
#: A token travels in an ``Authorization`` header; nginx's header buffers are 8 KiB.
MAX_TOKEN_CHARS = 4096
_TOKEN = re.compile(r"^ust_([A-Za-z0-9_-]{1,32})\.([A-Za-z0-9_-]{1,4000})\.([A-Za-z0-9_-]{43})$")
_JTI = re.compile(r"^[0-9a-f]{32}$")
#: Clock skew between API nodes tolerated on ``iat``.
_SKEW_SECONDS = 60


class TokenKeyError(ValueError):
    """The token secrets can't be loaded (missing, short, malformed): the API refuses to start."""


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token grants."""

    jti: str
    tenant: str
    issuer_key_id: str
    issued_at: int
    expires_at: int
    max_uploads: int = 1
    types: tuple[str, ...] | None = None
    max_bytes: int | None = None
    metadata: dict[str, Any] | None = field(default=None, hash=False)
    tags: tuple[str, ...] | None = None

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "jti": self.jti,
            "tenant": self.tenant,
            "iss": self.issuer_key_id,
            "iat": self.issued_at,
            "exp": self.expires_at,
            "max_uploads": self.max_uploads,
        }
        if self.types is not None:
            payload["types"] = list(self.types)
        if self.max_bytes is not None:
            payload["max_bytes"] = self.max_bytes
        if self.metadata is not None:
            payload["metadata"] = self.metadata
        if self.tags is not None:
            payload["tags"] = list(self.tags)
        return payload

    @classmethod
    def from_payload(cls, payload: Any) -> TokenClaims:
        """Strictly typed: any unexpected shape is a refusal (even under a valid MAC)."""
        if not isinstance(payload, dict) or payload.get("v") != FORMAT_VERSION:
            raise ValueError("unknown token format")
        known = {"v", "jti", "tenant", "iss", "iat", "exp", "max_uploads", "types", "max_bytes", "metadata", "tags"}
        if set(payload) - known:
            raise ValueError("unknown token fields")
        jti, tenant, issuer = payload.get("jti"), payload.get("tenant"), payload.get("iss")
        if not (isinstance(jti, str) and _JTI.fullmatch(jti)):
            raise ValueError("bad jti")
        if not (isinstance(tenant, str) and 0 < len(tenant) <= 63 and isinstance(issuer, str) and 0 < len(issuer) <= 32):
            raise ValueError("bad tenant or issuer")
        iat, exp, uses = payload.get("iat"), payload.get("exp"), payload.get("max_uploads")
        if not all(_is_int(v) for v in (iat, exp, uses)) or uses < 1:
            raise ValueError("bad times or use count")
        types, max_bytes, metadata, tags = (payload.get(k) for k in ("types", "max_bytes", "metadata", "tags"))
        if types is not None and not (isinstance(types, list) and all(isinstance(t, str) for t in types)):
            raise ValueError("bad types")
        if max_bytes is not None and not (_is_int(max_bytes) and max_bytes > 0):
            raise ValueError("bad max_bytes")
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError("bad metadata")
        if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
            raise ValueError("bad tags")
        return cls(
            jti=jti, tenant=tenant, issuer_key_id=issuer, issued_at=iat, expires_at=exp, max_uploads=uses,
            types=tuple(types) if types is not None else None, max_bytes=max_bytes, metadata=metadata,
            tags=tuple(tags) if tags is not None else None,
        )


@dataclass(frozen=True)
class Keyring:
    """The secrets tokens are verified with, and the one new tokens are signed with."""

    secrets: dict[str, bytes] = field(repr=False)
    active_key_id: str

    def __repr__(self) -> str:
        return f"Keyring(key_ids={sorted(self.secrets)}, active={self.active_key_id!r})"


def load_keyring(settings: TokenSettings) -> Keyring:
    """The secrets of ``tokens.secrets`` plus ``tokens.secrets_file``; refuses none or short ones."""
    found, active = load_secret_keys(
        settings.secrets, settings.secrets_file, settings.active_key_id,
        setting="tokens.secrets", error=TokenKeyError,
        missing="no upload-token secret: set tokens.secrets "
        "(UPLOAD_TOKENS__SECRETS='{\"k1\": \"<32+ random bytes>\"}') or tokens.secrets_file",
    )
    return Keyring(secrets={k: v.encode() for k, v in found.items()}, active_key_id=active)


def load_keyring_file(path: Path) -> Keyring:
    """For tools: the keyring of a secrets file alone."""
    return load_keyring(TokenSettings(secrets_file=path))


def new_token_id() -> str:
    return secrets.token_hex(16)


#: Bounds of a token's narrowing: it travels in a header, so it stays small.
MAX_TOKEN_METADATA_BYTES = 2048
MAX_TOKEN_TAGS, MAX_TOKEN_TAG_CHARS = 20, 64
MAX_TOKEN_UPLOADS = 1000


def new_claims(
    *,
    tenant: str,
    issuer_key_id: str,
    now: float,
    settings: TokenSettings,
    limits: LimitSettings,
    ttl_seconds: int | None = None,
    types: list[str] | None = None,
    max_bytes: int | None = None,
    max_uploads: int = 1,
    metadata: dict[str, Any] | None = None,
    tags: list[str] | None = None,
) -> TokenClaims:
    """The claims of a new token, or ``422 VALIDATION_FAILED`` for narrowing that can't hold."""
    ttl = settings.default_ttl_seconds if ttl_seconds is None else ttl_seconds
    if not 1 <= ttl <= settings.max_ttl_seconds:
        raise _invalid("ttl_seconds", f"between 1 and {settings.max_ttl_seconds} seconds")
    if types is not None:
        unknown = sorted(set(types) - set(limits.allowed_types))
        if not types or unknown:
            raise _invalid("allowed_types", f"a non-empty subset of {limits.allowed_types}; not allowed here: {unknown}")
        types = [t for t in limits.allowed_types if t in types]
    if max_bytes is not None and not 1 <= max_bytes <= limits.max_body_bytes:
        raise _invalid("max_bytes", f"between 1 and {limits.max_body_bytes} (the body cap)")
    if not 1 <= max_uploads <= MAX_TOKEN_UPLOADS:
        raise _invalid("max_uploads", f"between 1 and {MAX_TOKEN_UPLOADS}")
    if metadata is not None and len(json.dumps(metadata, separators=(",", ":")).encode()) > MAX_TOKEN_METADATA_BYTES:
        raise _invalid("metadata", f"at most {MAX_TOKEN_METADATA_BYTES} bytes of JSON")
    if tags is not None:
        if len(tags) > MAX_TOKEN_TAGS or any(not t or len(t) > MAX_TOKEN_TAG_CHARS for t in tags):
            raise _invalid("tags", f"at most {MAX_TOKEN_TAGS} tags of 1 to {MAX_TOKEN_TAG_CHARS} characters")
        tags = list(dict.fromkeys(tags))
    issued = int(now)
    return TokenClaims(
        jti=new_token_id(), tenant=tenant, issuer_key_id=issuer_key_id, issued_at=issued, expires_at=issued + ttl,
        max_uploads=max_uploads, types=tuple(types) if types is not None else None, max_bytes=max_bytes,
        metadata=metadata, tags=tuple(tags) if tags is not None else None,
    )


def _invalid(name: str, rule: str) -> ServiceError:
    return ServiceError(
        ErrorCode.VALIDATION_FAILED, f"{name}: {rule}", details=[{"loc": ["body", name], "msg": rule}]
    )


def mint(keyring: Keyring, claims: TokenClaims) -> str:
    """The signed token for ``claims``, signed with the active secret."""
    key_id = keyring.active_key_id
    body = json.dumps(claims.to_payload(), separators=(",", ":"), sort_keys=True, ensure_ascii=True)
    signed = f"{TOKEN_PREFIX}{key_id}.{_b64encode(body.encode())}"
    token = f"{signed}.{_b64encode(_mac(keyring.secrets[key_id], signed))}"
    if len(token) > MAX_TOKEN_CHARS:
        raise ServiceError(
            ErrorCode.VALIDATION_FAILED,
            f"the token's narrowing is too large (token over {MAX_TOKEN_CHARS} characters); send less metadata or fewer tags",
        )
    return token


def is_upload_token(credential: str) -> bool:
    return credential.startswith(TOKEN_PREFIX)


def verify(keyring: Keyring, token: str, *, now: float) -> TokenClaims:
    """The claims of a genuine, unexpired token, or ``401 UNAUTHENTICATED``."""
    match = _TOKEN.fullmatch(token) if len(token) <= MAX_TOKEN_CHARS else None
    if match is None:
        raise unauthenticated("the upload token is malformed")
    key_id, payload, mac = match.groups()
    secret = keyring.secrets.get(key_id)
    # An unknown key id still costs one MAC, so timing does not tell which key ids exist.
    expected = _b64encode(_mac(secret if secret is not None else b"\0" * 32, f"{TOKEN_PREFIX}{key_id}.{payload}"))
    # Compared as text: only the one canonical encoding of the MAC is accepted.
    if not hmac.compare_digest(expected, mac) or secret is None:
        raise unauthenticated("the upload token is invalid")
    try:
        claims = TokenClaims.from_payload(json.loads(_b64decode(payload)))
    except ValueError:
        raise unauthenticated("the upload token is invalid") from None
    if claims.expires_at <= now:
        raise unauthenticated("the upload token has expired")
    if claims.issued_at > now + _SKEW_SECONDS or claims.issued_at >= claims.expires_at:
        raise unauthenticated("the upload token is invalid")
    if not TOKEN_KEY_ID.fullmatch(key_id):  # the regex above already holds it; kept explicit
        raise unauthenticated("the upload token is invalid")
    return claims


def narrow_limits(limits: LimitSettings, claims: TokenClaims | None) -> LimitSettings:
    """The limits the ingest applies to a token's upload: allowed types intersected with the
    token's, each per-type limit at most the token's ``max_bytes``. The same object the ingest
    receives, so ``GET /v1/limits`` and the ingest can't disagree."""
    if claims is None or (claims.types is None and claims.max_bytes is None):
        return limits
    update: dict[str, Any] = {}
    if claims.types is not None:
        update["allowed_types"] = [t for t in limits.allowed_types if t in claims.types]
    if claims.max_bytes is not None:
        update["max_image_bytes"] = min(limits.max_image_bytes, claims.max_bytes)
        update["max_pdf_bytes"] = min(limits.max_pdf_bytes, claims.max_bytes)
    return limits.model_copy(update=update)


def unauthenticated(message: str) -> ServiceError:
    return ServiceError(ErrorCode.UNAUTHENTICATED, message, headers={"WWW-Authenticate": "Bearer"})


def _mac(secret: bytes, signed: str) -> bytes:
    return hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
