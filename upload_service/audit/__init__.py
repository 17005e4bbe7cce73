"""The audit trail: a closed vocabulary of events, one writer with a durable local fallback,
per-tenant hash chains for tamper evidence, and tenant-scoped queries.

``events`` is pure; ``chain`` and ``queries`` work on a caller's SQLAlchemy session;
``journal`` is the append-only file; ``writer`` ties the DB and the journal together.
"""

from upload_service.audit.chain import (
    GENESIS_HASH,
    NO_TENANT_CHAIN,
    ChainProblem,
    canonical_json,
    chain_name,
    compute_hash,
    verify_chain,
)
from upload_service.audit.events import AuditAction, AuditEvent, StoredEvent
from upload_service.audit.queries import count_events, iter_events, list_events
from upload_service.audit.writer import AuditWriter

__all__ = [
    "GENESIS_HASH",
    "NO_TENANT_CHAIN",
    "AuditAction",
    "AuditEvent",
    "AuditWriter",
    "ChainProblem",
    "StoredEvent",
    "canonical_json",
    "chain_name",
    "compute_hash",
    "count_events",
    "iter_events",
    "list_events",
    "verify_chain",
]
