"""``audit.chain.append_events``: a batch of several tenants' events extends each chain once, in
order, skips events already stored, and continues chains the single-event path started
(SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.audit import make_event, stored_rows
from upload_service.audit import verify_chain
from upload_service.audit.chain import append_event, append_events
from upload_service.db.audit_models import AuditChainHead
from upload_service.db.engine import session_scope


def test_a_batch_extends_each_tenants_chain_in_order(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        assert append_event(session, make_event("acme"))
    first = [make_event(t) for t in ("acme", "zeta", None, "acme", "zeta", "acme")]
    with session_scope(sessions) as session:
        assert append_events(session, first) == [True] * 6
    again = make_event("zeta")
    with session_scope(sessions) as session:
        # Already stored, a repeat within the batch, and a new one.
        assert append_events(session, [first[1], again, again]) == [False, True, False]
    seqs: dict[str, list[int]] = {}
    for row in stored_rows(sessions):
        seqs.setdefault(row.chain, []).append(row.seq)
    assert seqs == {"acme": [1, 2, 3, 4], "zeta": [1, 2, 3], "-": [1]}
    acme = [row.event_id for row in stored_rows(sessions, "acme")]
    assert acme[1:] == [first[0].event_id, first[3].event_id, first[5].event_id]
    with sessions() as session:
        assert verify_chain(session) == []
        assert {h.chain: h.seq for h in session.query(AuditChainHead)} == {"acme": 4, "zeta": 3, "-": 1}


def test_a_rolled_back_batch_leaves_the_heads_as_they_were(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        append_events(session, [make_event("acme"), make_event("new")])
    with sessions() as session:
        append_events(session, [make_event("acme"), make_event("other")])
        session.rollback()
    with session_scope(sessions) as session:
        assert append_events(session, [make_event("acme")]) == [True]
    with sessions() as session:
        assert verify_chain(session) == []
        assert {h.chain: h.seq for h in session.query(AuditChainHead)} == {"acme": 2, "new": 1}


def test_a_new_batch_skips_the_lookup_and_a_stored_event_still_fails_it_whole(sessions: sessionmaker[Session]) -> None:
    """``new=True`` (the group commit's batches): no lookup of stored events, a repeat within
    the batch is still dropped, and an event already stored is refused by the unique event id:
    the whole transaction fails and the chain is as it was."""
    stored = make_event("acme")
    with session_scope(sessions) as session:
        assert append_events(session, [stored]) == [True]
    fresh = make_event("acme")
    with session_scope(sessions) as session:
        assert append_events(session, [fresh, fresh], new=True) == [True, False]
    with pytest.raises(IntegrityError):
        with session_scope(sessions) as session:
            append_events(session, [make_event("acme"), stored], new=True)
    with sessions() as session:
        assert verify_chain(session) == []
        assert {h.chain: h.seq for h in session.query(AuditChainHead)} == {"acme": 2}
    assert [row.event_id for row in stored_rows(sessions, "acme")] == [stored.event_id, fresh.event_id]
