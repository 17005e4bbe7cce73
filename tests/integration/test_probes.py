"""Probes that fit a load balancer: ``/readyz`` asks only what is local to the node and says
nothing about its internals; ``/health`` has the shared dependencies and their details."""

from __future__ import annotations

import re

import httpx

from tests import samples
from tests.fixtures.app import LiveServer


def test_readyz_stays_ready_while_redis_is_down_and_health_reports_it(server: LiveServer, redis_service) -> None:  # type: ignore[no-untyped-def]
    redis_service.process.stop()
    try:
        ready = httpx.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ok", "checks": {"db": {"status": "ok"}, "spool": {"status": "ok"}}}
        health = httpx.get(server.url + "/health", timeout=10)
        assert health.status_code == 503
        checks = health.json()["checks"]
        assert health.json()["status"] == "degraded"
        assert checks["redis"]["status"] == "fail"
        assert (checks["db"]["status"], checks["spool"]["status"], checks["s3"]["status"]) == ("ok", "ok", "ok")
        # ...and the node really serves: uploads are accepted and recorded queued.
        response = server.client().upload(samples.png_bytes(), "a.png")
        assert response.status_code == 202 and response.json()["status"] == "queued"
    finally:
        redis_service.ensure_running()


def test_readyz_stays_ready_while_s3_is_down(server: LiveServer, s3_service) -> None:  # type: ignore[no-untyped-def]
    s3_service.process.pause()
    try:
        ready = httpx.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        health = httpx.get(server.url + "/health", timeout=15).json()
        assert health["checks"]["s3"]["status"] == "fail"
    finally:
        s3_service.ensure_running()


def test_readyz_shows_no_internals(server: LiveServer) -> None:
    text = httpx.get(server.url + "/readyz", timeout=10).text
    assert not re.search(r"\d", text), text  # no byte counts, latencies, addresses or ports
    assert "bytes" not in text and "127.0.0.1" not in text and "detail" not in text
    detailed = httpx.get(server.url + "/health", timeout=10).json()["checks"]
    assert "bytes free" in detailed["spool"]["detail"]  # the internal view keeps them


def test_a_full_spool_makes_only_that_node_unready(server_factory, server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    full = server_factory(spool={"min_free_bytes": 10**18})
    ready = httpx.get(full.url + "/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json() == {"status": "degraded", "checks": {"db": {"status": "ok"}, "spool": {"status": "fail"}}}
    assert httpx.get(server.url + "/readyz", timeout=10).status_code == 200
