"""Tamper evidence: each tenant's events form a hash chain, extended under a lock at insert
(one event at a time, or a group commit's whole batch at once: ``append_events``).

``hash = sha256(prev_hash + canonical JSON of the event and its seq)``. Editing a row breaks its
hash; deleting one leaves a ``seq`` gap or, at the end, a head that points past the last row;
recomputing one row's hash breaks the next row's link. (Rewriting a whole chain from the edit
onwards, head included, is not detectable from inside the database: anchor exported head
hashes elsewhere for that.)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import Select, bindparam, insert, select, union, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from upload_service.audit.events import AuditEvent, format_timestamp
from upload_service.db.audit_models import AuditChainHead, AuditEventRow

#: ``prev_hash`` of the first event of every chain.
GENESIS_HASH = "0" * 64
#: The chain of events that belong to no tenant (``auth:failed`` with an unknown key).
NO_TENANT_CHAIN = "-"
#: The event fields that are hashed, i.e. every field of ``AuditEvent``.
HASHED_FIELDS = tuple(AuditEvent.__dataclass_fields__)

ProblemKind = Literal["altered", "broken_link", "gap", "truncated", "missing_head", "unreadable"]


@dataclass(frozen=True)
class ChainProblem:
    """The first broken link found in one chain."""

    chain: str
    kind: ProblemKind
    seq: int | None
    event_id: str | None
    message: str

    def __str__(self) -> str:
        where = f" at seq {self.seq}" if self.seq is not None else ""
        which = f" (event {self.event_id})" if self.event_id else ""
        return f"chain {self.chain}: {self.kind}{where}{which}: {self.message}"


def chain_name(tenant: str | None) -> str:
    return NO_TENANT_CHAIN if tenant is None else tenant


def canonical_json(fields: dict[str, Any], seq: int) -> str:
    """Sorted keys, no whitespace, ASCII only, timestamps in one format: the same bytes for the
    same event whatever produced the dict (the event object, a DB row, a journal line)."""
    payload = {name: fields.get(name) for name in HASHED_FIELDS}
    payload["seq"] = seq
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def compute_hash(prev_hash: str, fields: dict[str, Any], seq: int) -> str:
    return hashlib.sha256((prev_hash + canonical_json(fields, seq)).encode("ascii")).hexdigest()


def row_fields(row: AuditEventRow) -> dict[str, Any]:
    """A row's hashed fields read as stored, without validation, so a tampered row can still be
    checked (and reported) rather than blowing up the verifier."""
    fields = {name: getattr(row, name) for name in HASHED_FIELDS}
    fields["occurred_at"] = format_timestamp(row.occurred_at)
    return fields


def append_event(session: Session, event: AuditEvent) -> bool:
    """Append ``event`` to its tenant's chain in the caller's transaction; False if already stored.

    The head row is locked before the duplicate check, so concurrent writers of one tenant (and
    a replay racing a live write of the same event) are serialized and each ``event_id`` lands
    once. The caller commits; the event commits or rolls back with whatever else the caller
    wrote in that transaction, and the head stays locked until then.
    """
    return append_events(session, [event])[0]


def append_event_unless(session: Session, event: AuditEvent, *, already: Select[Any] | None = None) -> bool:
    """``append_event``, skipped if the ``already`` query (checked under the chain head lock, so
    two writers can't both find it empty) returns a row: e.g. "this upload already has a
    terminal event". False if skipped or already stored."""
    if already is None:
        return append_event(session, event)
    heads = _lock_heads(session, [chain_name(event.tenant)])
    if session.execute(already.limit(1)).first() is not None:
        return False
    return _extend(session, heads, [event], new=False)[0]


def append_events(session: Session, events: Sequence[AuditEvent], *, new: bool = False) -> list[bool]:
    """Append ``events``, in order, to their tenants' chains in the caller's transaction: the one
    chain algorithm, for a single event and for a group commit's batch alike.

    The heads of the batch's chains are locked in sorted order (two writers whose batches share
    chains take them in the same order, so they cannot deadlock), then the events already stored
    are skipped, then ``seq``, ``prev_hash`` and ``hash`` are computed here for each event in
    order, the rows go in with one multi-row insert and each head is updated once. The heads
    stay locked until the caller's transaction ends. Returns, per event, whether it was
    appended (False: already stored, or a repeat within ``events``).

    ``new``: the events were never offered to the database before (a group commit's batch of
    events made in this process): the lookup of ones already stored is skipped, one statement
    less per batch. A stored one would still be refused by the unique ``event_id`` (the
    transaction fails; the chain is untouched).
    """
    if not events:
        return []
    heads = _lock_heads(session, sorted({chain_name(event.tenant) for event in events}))
    return _extend(session, heads, events, new=new)


@dataclass
class _Head:
    seq: int
    last_hash: str
    moved: bool = False


def _extend(session: Session, heads: dict[str, _Head], events: Sequence[AuditEvent], *, new: bool) -> list[bool]:
    connection = session.connection()
    stored: set[str] = set()
    if not new:
        ids = [event.event_id for event in events]
        stored.update(connection.scalars(select(AuditEventRow.event_id).where(AuditEventRow.event_id.in_(ids))))
    rows: list[dict[str, Any]] = []
    appended: list[bool] = []
    for event in events:
        if event.event_id in stored:
            appended.append(False)
            continue
        stored.add(event.event_id)
        chain = chain_name(event.tenant)
        head = heads[chain]
        fields = event.to_dict()
        seq = head.seq + 1
        digest = compute_hash(head.last_hash, fields, seq)
        fields.update(occurred_at=event.occurred_at, chain=chain, seq=seq, prev_hash=head.last_hash, hash=digest)
        rows.append(fields)
        head.seq, head.last_hash, head.moved = seq, digest, True
        appended.append(True)
    if rows:
        connection.execute(_INSERT_EVENTS, rows)
        moved = [{"head": chain, "new_seq": h.seq, "new_hash": h.last_hash} for chain, h in heads.items() if h.moved]
        connection.execute(_MOVE_HEAD, moved)
    return appended


def _lock_heads(session: Session, chains: Sequence[str]) -> dict[str, _Head]:
    """The chains' head rows, locked until the transaction ends, in the order given (sorted by
    the callers); missing heads are created first.

    PostgreSQL: missing heads are inserted with ``ON CONFLICT DO NOTHING`` (a writer racing to
    create the same head waits for the winner's commit, then finds it), then ``SELECT ... ORDER
    BY chain FOR UPDATE`` locks them in order. SQLite ignores FOR UPDATE and pysqlite only opens
    a transaction at the first write, so a bare SELECT would let two writers read the same head:
    the insert (a write) takes SQLite's single write lock first (waiting out the busy timeout)
    for the whole transaction — one writer at a time per database file.
    """
    connection = session.connection()
    create = _CREATE_HEADS.get(connection.dialect.name)
    if create is None:  # pragma: no cover - the two supported databases are in _CREATE_HEADS
        raise RuntimeError(f"unsupported database {connection.dialect.name!r} for the audit chain")
    connection.execute(create, [{"chain": chain, "seq": 0, "last_hash": GENESIS_HASH} for chain in chains])
    locked = connection.execute(_LOCK_HEADS, {"chains": list(chains)})
    heads = {row.chain: _Head(row.seq, row.last_hash) for row in locked}
    missing = set(chains) - heads.keys()
    if missing:
        raise RuntimeError(f"could not lock the head of audit chain(s) {sorted(missing)!r}")
    return heads


# The statements of every append, built once (with their cache keys): building them per batch
# cost the group commit more than running them.
_HEADS = AuditChainHead.__table__
_CREATE_HEADS = {
    "postgresql": postgresql.insert(_HEADS).on_conflict_do_nothing(index_elements=["chain"]),
    "sqlite": sqlite.insert(_HEADS).on_conflict_do_nothing(index_elements=["chain"]),
}
_LOCK_HEADS = (
    select(_HEADS.c.chain, _HEADS.c.seq, _HEADS.c.last_hash)
    .where(_HEADS.c.chain.in_(bindparam("chains", expanding=True)))
    .order_by(_HEADS.c.chain)
    .with_for_update()
)
_INSERT_EVENTS = insert(AuditEventRow.__table__)
_MOVE_HEAD = (
    update(_HEADS)
    .where(_HEADS.c.chain == bindparam("head"))
    .values(seq=bindparam("new_seq"), last_hash=bindparam("new_hash"))
)


def verify_chain(session: Session, tenant: str | None = None) -> list[ChainProblem]:
    """Recompute every hash in ``seq`` order; at most one problem (the first) per chain.

    ``tenant`` is a chain name (``-`` for events without a tenant); None checks every chain.
    """
    if tenant is not None:
        chains = [tenant]
    else:
        names = union(select(AuditEventRow.chain), select(AuditChainHead.chain))
        chains = sorted(session.scalars(select(names.subquery().c.chain)))
    problems = (_verify_one(session, chain) for chain in chains)
    return [problem for problem in problems if problem is not None]


def _verify_one(session: Session, chain: str) -> ChainProblem | None:
    rows = session.scalars(
        select(AuditEventRow).where(AuditEventRow.chain == chain).order_by(AuditEventRow.seq).execution_options(yield_per=500)
    )
    expected_seq, prev_hash = 1, GENESIS_HASH
    for row in rows:
        problem = _check_row(chain, row, expected_seq, prev_hash)
        if problem is not None:
            return problem
        expected_seq, prev_hash = row.seq + 1, row.hash
    last_seq = expected_seq - 1
    head = session.get(AuditChainHead, chain)
    if head is None:
        if last_seq == 0:
            return None
        return ChainProblem(chain, "missing_head", None, None, "events exist but the chain head row is gone")
    if head.seq != last_seq or head.last_hash != prev_hash:
        return ChainProblem(
            chain, "truncated", last_seq + 1, None,
            f"the head records {head.seq} events but the chain ends at seq {last_seq}: events deleted or head altered",
        )
    return None


def _check_row(chain: str, row: AuditEventRow, expected_seq: int, prev_hash: str) -> ChainProblem | None:
    if row.seq != expected_seq:
        message = f"seq {expected_seq} is missing (next stored is {row.seq}): event deleted"
        return ChainProblem(chain, "gap", expected_seq, None, message)
    if row.prev_hash != prev_hash:
        return ChainProblem(chain, "broken_link", row.seq, row.event_id, "prev_hash does not match the previous event's hash")
    try:
        recomputed = compute_hash(row.prev_hash, row_fields(row), row.seq)
    except (TypeError, ValueError) as exc:
        return ChainProblem(chain, "unreadable", row.seq, row.event_id, f"stored fields cannot be hashed: {exc}")
    if recomputed != row.hash:
        return ChainProblem(chain, "altered", row.seq, row.event_id, "stored hash does not match the event's contents")
    return None
