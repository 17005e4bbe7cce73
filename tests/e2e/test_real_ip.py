"""The real client address behind a trusted proxy, through real nginx and the real app.

127.0.0.2 plays the load balancer (``nginx.real_ip_from``), 127.0.0.3 an untrusted peer; both
are loopback addresses, so the test only binds its client sockets to them. What must show: two
clients behind the trusted hop get separate rate-limit buckets, an untrusted peer can't choose
another bucket by sending the header, and the access log and the audit trail name the real
client (the app believes ``X-Forwarded-For`` only from nginx, ``server.trusted_proxies``)."""

from __future__ import annotations

import time

import httpx
from sqlalchemy import select

from tests.fixtures.app import LiveServer
from tests.fixtures.nginx import NginxFront
from tests.integration.contract import assert_error, new_request_id
from upload_service.db.audit_models import AuditEventRow

BALANCER = "127.0.0.2"
STRANGER = "127.0.0.3"


def get(base_url: str, path: str, *, source: str, forwarded_for: str | None = None, **headers: str) -> tuple[httpx.Response, str]:
    """GET from the loopback address ``source``; returns the response and its request id."""
    request_id = new_request_id("realip")
    sent = {"X-Request-ID": request_id, **headers}
    if forwarded_for is not None:
        sent["X-Forwarded-For"] = forwarded_for
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10) as client:
        return client.get(base_url + path, headers=sent), request_id


def audit_client_addr(server: LiveServer, request_id: str, timeout: float = 5.0) -> str | None:
    """The ``client_addr`` of the one audit event of a request (written after the response)."""
    deadline = time.monotonic() + timeout
    while True:
        with server.sessions() as session:
            rows = list(session.scalars(select(AuditEventRow).where(AuditEventRow.request_id == request_id)))
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(rows) == 1, [(r.action, r.client_addr) for r in rows]
    assert rows[0].action == "auth:failed"
    return rows[0].client_addr


def test_clients_behind_a_trusted_hop_get_their_own_rate_limit_buckets(front: NginxFront) -> None:
    with front.variant(real_ip_from=[f"{BALANCER}/32"], api_rate="1r/m", api_burst=0) as lb:
        first, rid_a1 = get(lb.url, "/livez", source=BALANCER, forwarded_for="198.51.100.1")
        again, rid_a2 = get(lb.url, "/livez", source=BALANCER, forwarded_for="198.51.100.1")
        other, rid_b = get(lb.url, "/livez", source=BALANCER, forwarded_for="198.51.100.2")
        own, rid_lb = get(lb.url, "/livez", source=BALANCER)
        # Recursive: a client-supplied entry left of the balancer's own is not believed; the
        # rightmost untrusted address is the client.
        chained, rid_c = get(lb.url, "/livez", source=BALANCER, forwarded_for="203.0.113.66, 198.51.100.3")
        assert [r.status_code for r in (first, again, other, own, chained)] == [200, 429, 200, 200, 200]
        assert_error(again, 429, "RATE_LIMITED")
        assert again.headers["retry-after"] == "60"  # one period of a per-minute rate

        # An untrusted peer's header is ignored: it stays in its own (now spent) bucket.
        spoof_1, rid_s1 = get(lb.url, "/livez", source=STRANGER, forwarded_for="198.51.100.4")
        spoof_2, rid_s2 = get(lb.url, "/livez", source=STRANGER, forwarded_for="198.51.100.5")
        assert (spoof_1.status_code, spoof_2.status_code) == (200, 429)

        logged = {rid: lb.access_entry(rid)["remote_addr"] for rid in (rid_a1, rid_a2, rid_b, rid_lb, rid_c, rid_s1, rid_s2)}
        assert logged == {
            rid_a1: "198.51.100.1", rid_a2: "198.51.100.1", rid_b: "198.51.100.2", rid_lb: BALANCER,
            rid_c: "198.51.100.3", rid_s1: STRANGER, rid_s2: STRANGER,
        }


def test_without_real_ip_from_the_header_is_never_believed(front: NginxFront) -> None:
    with front.variant(api_rate="1r/m", api_burst=0) as plain:
        first, rid_1 = get(plain.url, "/livez", source=BALANCER, forwarded_for="198.51.100.10")
        second, rid_2 = get(plain.url, "/livez", source=BALANCER, forwarded_for="198.51.100.11")
        assert (first.status_code, second.status_code) == (200, 429)
        assert plain.access_entry(rid_1)["remote_addr"] == BALANCER


def test_the_audit_trail_records_the_real_client(front: NginxFront, server: LiveServer) -> None:
    wrong_key = {"Authorization": "Bearer upl_nope_nope"}
    with front.variant(real_ip_from=[f"{BALANCER}/32"]) as lb:
        behind_lb, rid_lb = get(lb.url, "/v1/uploads/x", source=BALANCER, forwarded_for="198.51.100.20", **wrong_key)
        spoofed, rid_spoof = get(lb.url, "/v1/uploads/x", source=STRANGER, forwarded_for="198.51.100.21", **wrong_key)
    # Straight to the app from an address that is not nginx's: its header is not believed either.
    direct, rid_direct = get(server.url, "/v1/uploads/x", source=STRANGER, forwarded_for="198.51.100.22", **wrong_key)
    for response in (behind_lb, spoofed, direct):
        assert_error(response, 401, "UNAUTHENTICATED")
    assert audit_client_addr(server, rid_lb) == "198.51.100.20"
    assert audit_client_addr(server, rid_spoof) == STRANGER
    assert audit_client_addr(server, rid_direct) == STRANGER



def test_a_spoofed_header_line_before_the_balancers_own_is_not_believed(front: NginxFront) -> None:
    """Some balancers add their own X-Forwarded-For line instead of appending to the client's:
    nginx joins the lines and walks from the right, so the balancer's line wins."""
    with front.variant(real_ip_from=[f"{BALANCER}/32"]) as lb:
        request_id = new_request_id("realip")
        headers = [("X-Request-ID", request_id), ("X-Forwarded-For", "198.51.100.66"), ("X-Forwarded-For", "198.51.100.77")]
        with httpx.Client(transport=httpx.HTTPTransport(local_address=BALANCER), timeout=10) as client:
            assert client.get(lb.url + "/livez", headers=headers).status_code == 200
        assert lb.access_entry(request_id)["remote_addr"] == "198.51.100.77"
