"""API keys and upload tokens: creation, verification and scopes. No framework here; the API's
deps call it.

Two kinds of bearer credentials, told apart by their prefix: API keys (``usk_``, a DB row each)
and upload tokens (``ust_``, signed, verified without a DB read: ``upload_service.tokens``). A
token's principal may only create uploads (within its narrowing) and read the ones it created:
``Principal.require`` refuses it everything else unless a use case opts in with
``token_allowed=True``, so a new route is closed to tokens by default.

A key looks like ``usk_<id>_<secret>``: ``id`` (16 hex characters) is public and finds the row,
the secret is 256 random bits. Only SHA-256 of the whole key is stored — a fast hash is right for
a random token of that strength (a slow KDF protects guessable passwords, not these) — and it is
compared in constant time. An API process remembers a checked key for a few seconds
(``KeyAuthenticator``): a revoked key stops working within ``KEY_CACHE_TTL_SECONDS``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from upload_service.db import repository
from upload_service.db.errors import translated
from upload_service.db.models import ApiKey
from upload_service.errors import ErrorCode, ServiceError
from upload_service.tokens import Keyring, TokenClaims, is_upload_token, verify

KEY_PREFIX = "usk_"
_KEY = re.compile(r"usk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
TENANT_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class Scope(str, enum.Enum):
    UPLOAD = "upload"
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant whose data they may see, and what they may do."""

    key_id: str
    tenant: str
    scopes: frozenset[Scope]
    #: Set when the caller holds an upload token (``key_id`` is then the key that minted it).
    token: TokenClaims | None = None

    @property
    def token_id(self) -> str | None:
        return self.token.jti if self.token is not None else None

    def require(self, scope: Scope, *, token_allowed: bool = False) -> None:
        if self.token is not None and not token_allowed:
            raise ServiceError(
                ErrorCode.FORBIDDEN, "an upload token may only create uploads and read the ones it created"
            )
        if scope not in self.scopes and Scope.ADMIN not in self.scopes:
            raise ServiceError(ErrorCode.FORBIDDEN, f"this key lacks the '{scope.value}' scope")


@dataclass(frozen=True)
class NewKey:
    key: str
    record: ApiKey


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(text: str) -> list[Scope]:
    try:
        scopes = sorted({Scope(part.strip()) for part in text.split(",") if part.strip()}, key=lambda s: s.value)
    except ValueError:
        raise ValueError(f"scopes must be among {[s.value for s in Scope]}") from None
    if not scopes:
        raise ValueError("at least one scope is needed")
    return scopes


def create_key(session: Session, tenant: str, scopes: list[Scope], *, label: str | None = None) -> NewKey:
    if not TENANT_PATTERN.fullmatch(tenant):
        raise ValueError("tenant names are lower-case letters, digits, '-' and '_' (at most 63)")
    key_id = secrets.token_hex(8)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(
        id=key_id,
        tenant=tenant,
        key_hash=hash_key(key),
        scopes=[s.value for s in scopes],
        label=label,
        created_at=repository.utcnow(),
    )
    repository.add_api_key(session, record)
    return NewKey(key=key, record=record)


def revoke_key(session: Session, key_id: str) -> ApiKey:
    record = repository.get_api_key(session, key_id)
    if record is None:
        raise LookupError(f"no key with id {key_id}")
    if record.revoked_at is None:
        record.revoked_at = repository.utcnow()
    return record


def bearer_credential(authorization: str | None) -> str:
    """The credential of ``Authorization: Bearer <credential>``, or 401 UNAUTHENTICATED."""
    if not authorization:
        raise _unauthenticated("an API key or upload token is required (Authorization: Bearer <key>)")
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise _unauthenticated("use Authorization: Bearer <key>")
    return credential.strip()


def is_token_credential(authorization: str | None) -> bool:
    """Whether the header carries an upload token (checked without a DB read) rather than a key."""
    try:
        return is_upload_token(bearer_credential(authorization))
    except ServiceError:
        return False


def authenticate_token(keyring: Keyring, authorization: str | None, *, now: float) -> Principal:
    """``Authorization: Bearer ust_...`` → the token's Principal (no DB read), or 401."""
    claims = verify(keyring, bearer_credential(authorization), now=now)
    if not TENANT_PATTERN.fullmatch(claims.tenant):
        raise _unauthenticated("the upload token is invalid")
    return Principal(
        key_id=claims.issuer_key_id, tenant=claims.tenant, scopes=frozenset({Scope.UPLOAD, Scope.READ}), token=claims
    )


def authenticate(session: Session, authorization: str | None) -> Principal:
    """``Authorization: Bearer <key>`` → Principal, or 401 UNAUTHENTICATED."""
    token = bearer_credential(authorization)
    match = _KEY.fullmatch(token)
    record = repository.get_api_key(session, match.group(1)) if match else None
    # Compare even when no row matched, so timing does not tell which key ids exist.
    expected = record.key_hash if record is not None else "0" * 64
    valid = hmac.compare_digest(expected, hash_key(token))
    if record is None or not valid or record.revoked_at is not None:
        raise _unauthenticated("the API key is invalid or revoked")
    return Principal(key_id=record.id, tenant=record.tenant, scopes=frozenset(Scope(s) for s in record.scopes))


#: How long a process trusts an API key it has checked: a revoked key stops working on every API
#: process within this many seconds (documented in docs/security.md).
KEY_CACHE_TTL_SECONDS = 5.0
KEY_CACHE_MAX_ENTRIES = 10_000


class KeyAuthenticator:
    """``authenticate`` for a process that serves many requests: a valid key's principal is
    kept, under the SHA-256 of the whole key, for ``ttl_seconds`` — so most requests need no
    DB read and no thread. Only successes are kept (a refused key is checked every time), at
    most ``max_entries`` (then the cache starts over). A key revoked in the database is refused
    by this process at the latest ``ttl_seconds`` later. Thread-safe enough: a lookup and a store
    are single dict operations."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        ttl_seconds: float = KEY_CACHE_TTL_SECONDS,
        max_entries: int = KEY_CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._known: dict[str, tuple[float, Principal]] = {}

    def cached(self, authorization: str | None) -> Principal | None:
        """The principal of a key checked less than ``ttl_seconds`` ago, else None (no I/O)."""
        try:
            digest = hash_key(bearer_credential(authorization))
        except ServiceError:
            return None
        entry = self._known.get(digest)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def authenticate(self, authorization: str | None) -> Principal:
        """The DB check (blocking; raises ``DatabaseError`` or 401), remembered on success."""
        with translated(), self._sessions() as session:
            principal = authenticate(session, authorization)
        if len(self._known) >= self._max_entries:
            self._known = {}
        self._known[hash_key(bearer_credential(authorization))] = (self._clock() + self._ttl, principal)
        return principal


def _unauthenticated(message: str) -> ServiceError:
    return ServiceError(ErrorCode.UNAUTHENTICATED, message, headers={"WWW-Authenticate": "Bearer"})
