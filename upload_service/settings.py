"""One settings root for the API, the workers, the local stack and the rendered nginx config.

Built once at start-up (``Settings()`` reads ``UPLOAD_*`` variables, nested with ``__``, e.g.
``UPLOAD_LIMITS__MAX_IMAGE_BYTES``) and passed down; nothing reads the environment at import.
Validators refuse unsafe values so a bad deployment fails at start, not at the first upload.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024

#: Media types accepted by default (docs/configuration.md, limits).
DEFAULT_ALLOWED_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf"]


class LimitSettings(BaseModel):
    """Body and file limits. "MB" means MiB, as in nginx."""

    max_body_bytes: int = Field(50 * MiB, gt=0, description="nginx cap on a whole request body")
    max_image_bytes: int = Field(20 * MiB, gt=0)
    max_pdf_bytes: int = Field(50 * MiB, gt=0)
    sniff_bytes: int = Field(2048, ge=16, le=64 * 1024)
    max_multipart_parts: int = Field(8, ge=1, le=1000)
    max_part_header_bytes: int = Field(8 * 1024, ge=256)
    max_preamble_bytes: int = Field(16 * 1024, ge=0)
    max_field_bytes: int = Field(64 * 1024, ge=1024, description="a non-file form field (metadata)")
    max_filename_chars: int = Field(255, ge=16, le=1024)
    max_json_depth: int = Field(32, ge=2, le=256, description="nesting of any JSON the API parses (metadata)")
    max_body_seconds: int = Field(
        600, ge=1, description="a whole request body must arrive within this, however it trickles"
    )
    allowed_types: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOWED_TYPES))

    @field_validator("allowed_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(DEFAULT_ALLOWED_TYPES))
        if unknown:
            raise ValueError(f"no pipeline processes {unknown}; allowed: {DEFAULT_ALLOWED_TYPES}")
        return value

    @model_validator(mode="after")
    def _under_cap(self) -> LimitSettings:
        for name in ("max_image_bytes", "max_pdf_bytes"):
            if getattr(self, name) > self.max_body_bytes:
                raise ValueError(
                    f"{name}={getattr(self, name)} exceeds max_body_bytes={self.max_body_bytes}, "
                    "the nginx body cap rendered from these settings"
                )
        return self

    def limit_for(self, media_type: str) -> int:
        """The size limit of one detected media type."""
        if media_type == "application/pdf":
            return self.max_pdf_bytes
        if media_type.startswith("image/"):
            return self.max_image_bytes
        return self.max_body_bytes


class SpoolSettings(BaseModel):
    dir: Path = Path("var/spool")
    min_free_bytes: int = Field(256 * MiB, ge=0, description="below this, uploads get 507 and /readyz is degraded")

    @field_validator("dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()


class DatabaseSettings(BaseModel):
    url: str = "sqlite:///var/uploads.db"
    echo: bool = False
    #: How long, at most, a group commit waits before its transaction begins for accepts whose
    #: original is on its way to storage (they announce themselves): fewer, fuller batches cost
    #: less CPU per upload. With none on its way it never waits; 0 turns the wait off.
    group_commit_gather_ms: float = Field(60.0, ge=0, le=100)


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"
    socket_timeout_seconds: float = Field(2.0, gt=0)


class StorageSettings(BaseModel):
    """Where originals and artifacts live. ``local`` is a directory (single machine only)."""

    backend: Literal["s3", "local"] = "s3"
    local_dir: Path = Path("var/objects")
    endpoint_url: str | None = None
    #: The S3 address clients (browsers, apps) reach, when it differs from ``endpoint_url``:
    #: presigned artifact URLs are signed for this host (SigV4 signs the Host header).
    public_endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    addressing_style: Literal["path", "virtual", "auto"] = "path"
    originals_bucket: str = "upload-originals"
    artifacts_bucket: str = "upload-artifacts"
    presign_ttl_seconds: int = Field(300, ge=1, le=7 * 24 * 3600)
    multipart_threshold_bytes: int = Field(8 * MiB, ge=5 * MiB)
    #: Part size of an original streamed to S3 while its body arrives: bodies up to one part go
    #: out as one PUT, larger ones as a multipart upload (S3's minimum part is 5 MiB).
    multipart_part_bytes: int = Field(8 * MiB, ge=5 * MiB, le=512 * MiB)
    #: Parts of one streamed original being sent at once; the reader waits beyond that, so an
    #: upload holds at most (this + 1) parts in memory.
    multipart_parts_in_flight: int = Field(2, ge=1, le=16)
    connect_timeout_seconds: float = Field(3.0, gt=0)
    read_timeout_seconds: float = Field(30.0, gt=0)
    max_attempts: int = Field(3, ge=1, le=10)

    @model_validator(mode="after")
    def _credentials(self) -> StorageSettings:
        if self.backend == "s3" and self.endpoint_url is not None:
            if self.access_key_id is None or self.secret_access_key is None:
                raise ValueError("an S3 endpoint needs access_key_id and secret_access_key")
        if self.originals_bucket == self.artifacts_bucket:
            raise ValueError("originals and artifacts must be different buckets")
        return self


class QueueSettings(BaseModel):
    image_queue: str = "images"
    pdf_queue: str = "pdfs"
    image_timeout_seconds: int = Field(120, ge=1)
    pdf_timeout_seconds: int = Field(300, ge=1)
    retry_intervals_seconds: list[int] = Field(default_factory=lambda: [5, 30, 120, 600])
    max_crashes: int = Field(3, ge=1, description="worker deaths on one upload before it fails")
    reconcile_interval_seconds: int = Field(60, ge=1)
    reconcile_grace_seconds: int = Field(30, ge=0, description="age before a queued upload counts as orphaned")
    result_ttl_seconds: int = Field(3600, ge=0)


class AdmissionSettings(BaseModel):
    """Watermarks checked before an upload's body is read: the service sheds load early
    (507 when the spool is below ``spool.min_free_bytes``, 503 past ``max_queue_depth``)."""

    max_queue_depth: int = Field(10_000, ge=0, description="waiting jobs in one queue; 0 turns the check off")
    retry_after_seconds: int = Field(30, ge=1)
    depth_cache_seconds: float = Field(1.0, ge=0, description="how long a queue-depth reading is reused")


class ProcessingSettings(BaseModel):
    """Budgets of one file's processing (docs/security.md, "Processing budgets").

    The decoder work factors (pixels, frames, JPEG scans, markers) are refused from the file's
    bytes before decoding; the pipeline then runs in a child process under its own CPU, memory
    and wall-clock budget, so one file can never take more than these.
    """

    max_pixels: int = Field(50_000_000, ge=1)
    max_frames: int = Field(200, ge=1)
    thumbnail_sizes: list[int] = Field(default_factory=lambda: [256, 1024])
    max_pdf_pages: int = Field(1000, ge=1)
    max_jpeg_scans: int = Field(100, ge=1, le=10_000, description="SOS segments of one JPEG: each is a pass over every block")
    max_image_segments: int = Field(65_536, ge=64, description="markers, chunks or blocks of one image file")
    max_cpu_seconds_per_file: int = Field(60, ge=1, description="CPU of the pipeline's child process (RLIMIT_CPU)")
    max_memory_bytes_per_file: int = Field(
        1536 * MiB, ge=128 * MiB, description="address space the child may add to the worker's (RLIMIT_AS)"
    )
    max_wall_seconds_per_file: int = Field(
        90, ge=1, description="the child is killed after this; must stay below every job timeout"
    )
    #: Per-job scratch directories live here (None: ``upload-service-scratch`` in the temp dir).
    scratch_dir: Path | None = None


class AuthSettings(BaseModel):
    """API keys are random tokens; only a SHA-256 of each is stored."""

    dev_key_tenant: str = "dev"


#: CORS: the request headers a page may send, the response headers it may read, the methods.
#: One list for the app's middleware and nginx's own answers (preflights, error pages).
CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID")
CORS_EXPOSE_HEADERS = ("Location", "X-Request-ID", "Retry-After", "Idempotent-Replayed")
CORS_ALLOW_METHODS = ("GET", "POST", "PATCH", "DELETE", "OPTIONS")
_ORIGIN = re.compile(r"^https?://([a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(:\d{1,5})?$")


class CorsSettings(BaseModel):
    """Origins whose pages may call the API (exact ``scheme://host[:port]``); empty: no CORS."""

    allow_origins: list[str] = Field(default_factory=list)
    max_age: int = Field(600, ge=0, le=86400, description="seconds a browser may cache a preflight")

    @field_validator("allow_origins")
    @classmethod
    def _exact_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*" or "*" in origin:
                raise ValueError(
                    "'*' is refused: pages send credentials (Authorization); list exact origins"
                )
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: lower-case scheme://host[:port], no path or trailing slash"
                )
        return list(dict.fromkeys(value))


#: Upload-token secrets: HMAC-SHA256 keys, so at least 32 bytes each.
MIN_TOKEN_SECRET_BYTES = 32
TOKEN_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class TokenSettings(BaseModel):
    """Short-lived upload tokens (``POST /v1/upload-tokens``), signed with these secrets.

    ``secrets`` maps a key id (carried in each token) to its secret; ``secrets_file`` holds more
    as ``key_id=secret`` lines. Tokens are signed with ``active_key_id`` (default: the only key)
    and verified with any listed key, so a secret rotates by adding a new key, making it
    active, and removing the old one once its tokens expired (``max_ttl_seconds``). The API
    refuses to start without a secret (the dev stack and the test fixtures generate one).
    """

    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    secrets_file: Path | None = None
    active_key_id: str | None = None
    default_ttl_seconds: int = Field(600, ge=1, le=3600)
    max_ttl_seconds: int = Field(3600, ge=1, le=3600)

    @field_validator("secrets")
    @classmethod
    def _strong(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key_id, secret in value.items():
            check_token_secret(key_id, secret.get_secret_value())
        return value

    @model_validator(mode="after")
    def _ttls(self) -> TokenSettings:
        if self.default_ttl_seconds > self.max_ttl_seconds:
            raise ValueError("default_ttl_seconds exceeds max_ttl_seconds")
        if self.active_key_id is not None and self.secrets_file is None and self.active_key_id not in self.secrets:
            raise ValueError(f"active_key_id {self.active_key_id!r} is not among the secrets' key ids")
        return self


def check_token_secret(key_id: str, secret: str) -> None:
    """Refuse a malformed key id or a secret shorter than 32 bytes (never echoing the secret)."""
    if not TOKEN_KEY_ID.fullmatch(key_id):
        raise ValueError(f"token key id {key_id[:40]!r} must be 1-32 of A-Z a-z 0-9 _ -")
    if len(secret.encode()) < MIN_TOKEN_SECRET_BYTES:
        raise ValueError(f"the token secret {key_id!r} is shorter than {MIN_TOKEN_SECRET_BYTES} bytes")


class WebhookSettings(BaseModel):
    """Webhook deliveries (docs/webhooks.md). Endpoint signing secrets are stored encrypted
    (AES-GCM) with ``secret_keys``: a key id (kept with each ciphertext) maps to a key of at
    least 32 bytes; ``secret_keys_file`` holds more as ``key_id=key`` lines; new secrets are
    encrypted with ``active_key_id`` (default: the only key), any listed key decrypts, so a key
    rotates by adding one, making it active, and running ``upload-service webhooks reencrypt``.
    Adding an endpoint and delivering refuse to run without a key."""

    secret_keys: dict[str, SecretStr] = Field(default_factory=dict)
    secret_keys_file: Path | None = None
    active_key_id: str | None = None
    #: Destinations resolving to loopback, private, link-local, CGNAT, multicast, reserved or
    #: metadata addresses are refused unless this is on (the dev stack and tests turn it on).
    allow_private_destinations: bool = False
    #: Networks allowed as destinations even when private (an operator's internal receivers).
    allowed_networks: list[str] = Field(default_factory=list)
    connect_timeout_seconds: float = Field(5.0, gt=0, le=60)
    read_timeout_seconds: float = Field(10.0, gt=0, le=120)
    #: One attempt's whole budget (connect, send, headers, capped body), however slowly it trickles.
    attempt_timeout_seconds: float = Field(30.0, gt=0, le=300)
    max_response_bytes: int = Field(4096, ge=0, le=1024 * 1024, description="response body read per attempt")
    retry_base_seconds: float = Field(5.0, gt=0, description="delay after the first failed attempt, doubled each time")
    retry_max_interval_seconds: float = Field(3600.0, gt=0)
    #: A delivery still failing this long after its event is marked dead.
    max_age_seconds: int = Field(24 * 3600, ge=1)
    max_attempts: int = Field(40, ge=1, le=1000)
    poll_interval_seconds: float = Field(1.0, gt=0)
    #: Deliveries one dispatcher leases and sends at once: each leased delivery is being sent,
    #: so a lease only has to outlast one attempt (``lease_seconds`` > ``attempt_timeout_seconds``).
    concurrency: int = Field(4, ge=1, le=64)
    #: A claimed delivery is someone else's to retry after this (a dispatcher killed mid-send).
    lease_seconds: float = Field(120.0, gt=0)
    #: After ``rotate-secret`` deliveries are signed with the old secret too for this long.
    rotation_overlap_seconds: int = Field(24 * 3600, ge=0)
    max_endpoints_per_tenant: int = Field(20, ge=1, le=1000)
    #: Delivered and dead deliveries (and their attempts and events) are kept this long.
    retention_days: int = Field(30, ge=1)

    @field_validator("secret_keys")
    @classmethod
    def _strong_keys(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key_id, secret in value.items():
            check_token_secret(key_id, secret.get_secret_value())
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        networks = []
        for entry in value:
            try:
                networks.append(str(ipaddress.ip_network(entry.strip(), strict=True)))
            except ValueError as exc:
                raise ValueError(f"allowed_networks entry {entry!r} is not an address or CIDR: {exc}") from None
        return networks

    @model_validator(mode="after")
    def _timeouts(self) -> WebhookSettings:
        if self.lease_seconds <= self.attempt_timeout_seconds:
            raise ValueError("webhooks.lease_seconds must exceed attempt_timeout_seconds (else two dispatchers send at once)")
        return self


class AuditSettings(BaseModel):
    """The audit trail's fallback: a local append-only journal replayed into the DB."""

    journal_path: Path = Path("var/audit-journal.jsonl")
    replay_interval_seconds: int = Field(30, ge=1)
    write_attempts: int = Field(3, ge=1, le=10)
    write_backoff_seconds: float = Field(0.05, ge=0)

    @field_validator("journal_path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=1, le=65535, description="behind nginx, which listens on nginx.listen_port")
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    #: After answering before the body was read in full (a refusal), read and discard the rest
    #: of the body for at most this long before closing, so a proxy still sending it reads the
    #: answer instead of a reset (api/lingering.py). Never more than limits.max_body_bytes.
    linger_seconds: float = Field(10.0, ge=0)
    #: ... and stop as soon as no body bytes arrived for this long.
    linger_idle_seconds: float = Field(2.0, gt=0)
    #: API processes of ``serve`` (``--workers`` wins); None: one per core this process may use
    #: (its CPU affinity, capped by a cgroup CPU limit). upload_service/server.py.
    workers: int | None = Field(None, ge=1, le=256)


class NginxSettings(BaseModel):
    """The nginx front, rendered from these settings (``upload-service nginx-config``).

    The body cap nginx enforces is ``limits.max_body_bytes``: the same number the app checks, so
    the two layers can't drift apart.
    """

    listen_host: str = "127.0.0.1"
    listen_port: int = Field(8080, ge=1, le=65535)
    #: API nodes: ``host:port`` or ``unix:/path/to.sock``; one or many.
    upstreams: list[str] = Field(default_factory=lambda: ["127.0.0.1:8081"])
    #: A second listener for /metrics and admin routes, never exposed publicly (None: off).
    internal_listen: str | None = None
    max_json_body_bytes: int = Field(1024 * 1024, ge=1024, description="cap on non-upload routes")
    client_body_timeout_seconds: int = Field(30, ge=1)
    client_header_timeout_seconds: int = Field(10, ge=1)
    send_timeout_seconds: int = Field(30, ge=1)
    keepalive_timeout_seconds: int = Field(65, ge=0)
    keepalive_requests: int = Field(1000, ge=1)
    upstream_keepalive: int = Field(32, ge=0)
    proxy_read_timeout_seconds: int = Field(120, ge=1)
    #: The most of an upload's body nginx reads from the client and passes on at a time (its
    #: ``client_body_buffer_size`` on uploads; nginx's own default is 16 KiB): each piece costs
    #: the API a receive and a parser call, so a 100 KB upload arrives whole rather than in seven.
    upload_body_buffer_bytes: int = Field(128 * 1024, ge=4 * 1024, le=8 * 1024 * 1024)
    client_header_buffer_size: str = "1k"
    large_client_header_buffers: str = "4 8k"
    upload_rate: str = Field("10r/s", pattern=r"^\d+r/[sm]$", description="limit_req rate per client on uploads")
    upload_burst: int = Field(20, ge=0)
    api_rate: str = Field("50r/s", pattern=r"^\d+r/[sm]$")
    api_burst: int = Field(100, ge=0)
    conn_per_client: int = Field(20, ge=1, description="limit_conn per client address")
    tls_certificate: Path | None = None
    tls_certificate_key: Path | None = None
    #: Load balancers / ingress in front of nginx whose client-address header is believed
    #: (nginx's ``set_real_ip_from``). Empty: the TCP peer is the client.
    real_ip_from: list[str] = Field(default_factory=list)
    #: The header those proxies put the client address in (``real_ip_header``).
    real_ip_header: str = Field("X-Forwarded-For", pattern=r"^[A-Za-z][A-Za-z0-9-]{0,63}$")

    @field_validator("real_ip_from")
    @classmethod
    def _trusted_networks(cls, value: list[str]) -> list[str]:
        """CIDRs (or single addresses), normalised; trusting every address would let any
        client choose its own address (and so its rate-limit bucket and audit trail)."""
        networks = []
        for entry in value:
            try:
                network = ipaddress.ip_network(entry.strip(), strict=True)
            except ValueError as exc:
                raise ValueError(f"real_ip_from entry {entry!r} is not an address or CIDR: {exc}") from None
            if network.prefixlen == 0:
                raise ValueError(f"real_ip_from entry {entry!r} trusts every address")
            networks.append(str(network))
        return networks

    @model_validator(mode="after")
    def _tls_pair(self) -> NginxSettings:
        if (self.tls_certificate is None) != (self.tls_certificate_key is None):
            raise ValueError("set both tls_certificate and tls_certificate_key, or neither")
        if not self.upstreams:
            raise ValueError("at least one upstream API node is needed")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="UPLOAD_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    limits: LimitSettings = Field(default_factory=LimitSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    processing: ProcessingSettings = Field(default_factory=ProcessingSettings)
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    nginx: NginxSettings = Field(default_factory=NginxSettings)
    cors: CorsSettings = Field(default_factory=CorsSettings)
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)

    @model_validator(mode="after")
    def _file_budget_under_job_timeouts(self) -> Settings:
        # The pipeline child is killed at its wall-clock budget; RQ must never have to kill the
        # work-horse for one file, so the budget leaves time for download and upload.
        wall = self.processing.max_wall_seconds_per_file
        for name in ("image_timeout_seconds", "pdf_timeout_seconds"):
            timeout = getattr(self.queue, name)
            if wall + 3 > timeout:
                raise ValueError(
                    f"processing.max_wall_seconds_per_file={wall} must be at least 3 s below "
                    f"queue.{name}={timeout}"
                )
        return self

    def to_env(self) -> dict[str, str]:
        """These settings as ``UPLOAD_*`` variables, to hand to a child process (worker, API)."""
        env: dict[str, str] = {}
        for section_name in type(self).model_fields:
            section = getattr(self, section_name)
            for name in type(section).model_fields:
                value = getattr(section, name)
                if value is None:
                    continue
                if isinstance(value, SecretStr):
                    value = value.get_secret_value()
                elif isinstance(value, list | dict):
                    value = json.dumps(value, default=_secret_value)
                env[f"UPLOAD_{section_name.upper()}__{name.upper()}"] = str(value)
        return env

    def prepare_dirs(self) -> None:
        """Create the spool (and local store) directories and refuse an unwritable spool."""
        self.spool.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not os.access(self.spool.dir, os.W_OK | os.X_OK):
            raise ValueError(f"spool dir {self.spool.dir} is not writable")
        self.audit.journal_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.storage.backend == "local":
            self.storage.local_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


def _secret_value(value: object) -> str:
    """``to_env`` of a dict of secrets (``tokens.secrets``): the secret itself, for a child."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
