"""Webhooks end to end: real API, real worker jobs, real DB (SQLite and PostgreSQL), a real
receiver on loopback that verifies every delivery with the ``standardwebhooks`` package.

Each test's endpoint belongs to a fresh tenant; dispatchers run in-process (or as the real
``upload-service webhooks dispatch`` process where one is killed) with short retry settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from tests.fixtures.app import LiveServer
from tests.fixtures.workers import run_jobs_in_process, wait_for_status
from tests.integration.webhookflow import (
    add_endpoint,
    deliveries_of,
    drain,
    make_dispatcher,
    settled,
    upload,
    webhook_settings,
)
from tests.integration.webhookreceiver import Receiver
from tests.samples import png_bytes, truncated_pdf_bytes
from upload_service.audit import AuditAction
from upload_service.db.audit_models import AuditEventRow
from upload_service.db.engine import session_scope
from upload_service.db.webhook_models import WebhookDelivery, WebhookEvent
from upload_service.devstack.process import ManagedProcess
from upload_service.settings import Settings
from upload_service.webhooks import admin
from upload_service.webhooks.dispatcher import Dispatcher


def test_accepted_done_failed_deleted_each_once_and_verified(server: LiveServer, receiver: Receiver) -> None:
    settings = webhook_settings()
    client = server.client()
    _endpoint, receiver.secret = add_endpoint(server, client.tenant, receiver.url, settings)
    image = upload(client, png_bytes(), "a.png", "image/png")
    pdf = upload(client, truncated_pdf_bytes(), "b.pdf", "application/pdf")
    run_jobs_in_process(server)
    image_record = wait_for_status(client, image, {"done"}, timeout=10)
    pdf_record = wait_for_status(client, pdf, {"failed"}, timeout=10)
    assert client.request("DELETE", f"/v1/uploads/{image}").status_code == 204

    dispatcher = make_dispatcher(server, settings)
    drain(dispatcher, settled(server, client.tenant))
    assert dispatcher.run_once() == 0  # nothing left: no second send of anything

    assert receiver.received and all(r.verified for r in receiver.received)
    got = receiver.delivered()
    assert len(got) == len(receiver.received) == 5
    assert len({r.webhook_id for r in got}) == 5  # each event exactly once
    assert [r.type for r in got if r.payload["data"]["id"] == image] == ["upload.accepted", "upload.done", "upload.deleted"]
    assert [r.type for r in got if r.payload["data"]["id"] == pdf] == ["upload.accepted", "upload.failed"]

    events = {(r.payload["data"]["id"], r.type): r.payload for r in got}
    accepted = events[(image, "upload.accepted")]["data"]
    assert accepted["status"] == "queued" and accepted["sha256"] == image_record["sha256"]
    assert accepted["artifacts"] == []
    done = events[(image, "upload.done")]["data"]
    assert done["status"] == "done"
    assert done["artifacts"] == image_record["artifacts"]  # the manifest's artifact list, manifest.json too
    assert "manifest.json" in {a["name"] for a in done["artifacts"]}
    failed = events[(pdf, "upload.failed")]["data"]
    assert failed["status"] == "failed" and failed["artifacts"] == []
    assert failed["error"] == pdf_record["error"]
    assert events[(image, "upload.deleted")]["data"]["status"] == "deleted"
    for item in got:
        assert item.headers["content-type"] == "application/json"
        assert item.webhook_id.startswith("msg_")


def test_no_endpoint_no_outbox_rows(server: LiveServer) -> None:
    client = server.client()
    upload(client, png_bytes(), "a.png", "image/png")
    assert deliveries_of(server, client.tenant) == []
    with server.sessions() as session:
        assert session.scalars(select(WebhookEvent).where(WebhookEvent.tenant == client.tenant)).all() == []


def test_only_subscribed_events_are_written(server: LiveServer, receiver: Receiver) -> None:
    settings = webhook_settings()
    client = server.client()
    _endpoint, receiver.secret = add_endpoint(server, client.tenant, receiver.url, settings, "upload.done,upload.failed")
    image = upload(client, png_bytes(), "a.png", "image/png")
    run_jobs_in_process(server)
    wait_for_status(client, image, {"done"}, timeout=10)
    assert [e.type for _, e in deliveries_of(server, client.tenant)] == ["upload.done"]


def test_500_then_200_is_delivered_after_retries_in_order(server: LiveServer, receiver: Receiver) -> None:
    settings = webhook_settings()
    client = server.client()
    _endpoint, receiver.secret = add_endpoint(server, client.tenant, receiver.url, settings)
    receiver.script = [500, 500]
    image = upload(client, png_bytes(), "a.png", "image/png")
    run_jobs_in_process(server)
    wait_for_status(client, image, {"done"}, timeout=10)

    drain(make_dispatcher(server, settings), settled(server, client.tenant))
    assert all(r.verified for r in receiver.received)
    # accepted was answered 500 twice, then 200; done waited for it (order per upload).
    assert [(r.type, r.answered) for r in receiver.received] == [
        ("upload.accepted", 500), ("upload.accepted", 500), ("upload.accepted", 200), ("upload.done", 200),
    ]
    assert len({r.webhook_id for r in receiver.received[:3]}) == 1  # a retry is the same message
    rows = deliveries_of(server, client.tenant)
    assert [d.status for d, _ in rows] == ["delivered", "delivered"]
    views = _views(server, client.tenant)
    accepted_log = next(v for v in views if v["type"] == "upload.accepted")["attempt_log"]
    assert [a["status_code"] for a in accepted_log] == [500, 500, 200]
    assert [a["outcome"] for a in accepted_log] == ["retry", "retry", "delivered"]
    assert all(isinstance(a["latency_ms"], int) for a in accepted_log)


def test_receiver_down_then_back(server: LiveServer, receiver: Receiver) -> None:
    settings = webhook_settings()
    client = server.client()
    _endpoint, receiver.secret = add_endpoint(server, client.tenant, receiver.url, settings)
    receiver.stop()
    upload(client, png_bytes(), "a.png", "image/png")
    dispatcher = make_dispatcher(server, settings)
    deadline = time.monotonic() + 10
    while deliveries_of(server, client.tenant)[0][0].attempts < 2:
        assert time.monotonic() < deadline
        dispatcher.run_once() or time.sleep(0.05)
    receiver.start()  # the same port
    drain(dispatcher, settled(server, client.tenant))
    assert [(r.type, r.verified) for r in receiver.delivered()] == [("upload.accepted", True)]
    log = _views(server, client.tenant)[0]["attempt_log"]
    assert log[0]["error"] == "connection refused" and log[-1]["status_code"] == 200


def test_dead_after_the_last_attempt_is_visible_and_redelivered(server: LiveServer, receiver: Receiver) -> None:
    settings = webhook_settings(max_attempts=2)
    client = server.client()
    endpoint, receiver.secret = add_endpoint(server, client.tenant, receiver.url, settings, "upload.accepted")
    receiver.script = [503] * 2
    upload_id = upload(client, png_bytes(), "a.png", "image/png")
    dispatcher = make_dispatcher(server, settings)
    drain(dispatcher, settled(server, client.tenant))
    [(delivery, event)] = deliveries_of(server, client.tenant)
    assert delivery.status == "dead" and delivery.attempts == 2 and delivery.last_status_code == 503

    with server.sessions() as session:  # the audit trail, in the transaction that marked it dead
        dead = session.scalars(
            select(AuditEventRow).where(AuditEventRow.tenant == client.tenant, AuditEventRow.action == "webhook:dead")
        ).all()
    assert [(d.upload_id, d.details["event_id"], d.details["endpoint_id"]) for d in dead] == [(upload_id, event.id, endpoint)]

    env = {**os.environ, **Settings(**{**server.settings.model_dump(), "webhooks": settings.model_dump()}).to_env()}
    listed = _cli(env, "deliveries", "--tenant", client.tenant, "--status", "dead")
    assert event.id in listed and '"status": "dead"' in listed
    metrics = server.client().request("GET", "/metrics").text
    assert 'upload_webhook_deliveries_total{outcome="dead"}' in metrics
    assert 'upload_webhook_deliveries_by_status{status="dead"}' in metrics
    assert "upload_webhook_oldest_pending_age_seconds" in metrics

    assert f"event {event.id}: 1 deliveries pending again" in _cli(env, "redeliver", event.id)
    drain(dispatcher, settled(server, client.tenant))
    assert [r.webhook_id for r in receiver.delivered()] == [event.id]
    assert all(r.verified for r in receiver.received)
    with server.sessions() as session:
        actions = session.scalars(
            select(AuditEventRow.action).where(AuditEventRow.tenant == client.tenant).order_by(AuditEventRow.id)
        ).all()
    assert actions.count(AuditAction.WEBHOOK_REDELIVERED.value) == 1


def test_dispatcher_killed_mid_delivery_delivers_later(server: LiveServer, receiver: Receiver, tmp_path: Any) -> None:
    settings = webhook_settings(lease_seconds=4, attempt_timeout_seconds=3)
    client = server.client()
    _endpoint, receiver.secret = add_endpoint(server, client.tenant, receiver.url, settings)
    receiver.hold = threading.Event()
    upload(client, png_bytes(), "a.png", "image/png")
    env = {**os.environ, **Settings(**{**server.settings.model_dump(), "webhooks": settings.model_dump()}).to_env()}
    process = ManagedProcess(
        "dispatcher", [sys.executable, "-m", "upload_service", "webhooks", "dispatch"], env=env,
        log_path=tmp_path / "dispatcher.log", ready=lambda: True, cwd=tmp_path,
    )
    process.start(timeout=10)
    try:
        assert receiver.arrived.wait(20), process.log_tail()
        process.kill()  # SIGKILL while the receiver holds the request
    finally:
        process.stop(timeout=5)
    receiver.hold.set()
    receiver.hold = None
    [(delivery, event)] = deliveries_of(server, client.tenant)
    assert delivery.status == "pending"  # never recorded: the dispatcher died mid-send

    drain(make_dispatcher(server, settings), settled(server, client.tenant), timeout=20)
    [(delivery, _)] = deliveries_of(server, client.tenant)
    assert delivery.status == "delivered"
    ids = [r.webhook_id for r in receiver.received]
    assert ids == [event.id, event.id]  # a duplicate with the same webhook-id; never a loss
    assert all(r.verified for r in receiver.received)


def test_a_rolled_back_status_change_sends_no_event(server: LiveServer, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's ``done`` transaction fails at its last statement: status, artifacts and the
    upload.done event roll back together; the job then ends the upload failed (with its event)."""
    from workers import context

    settings = webhook_settings()
    client = server.client()
    _endpoint, receiver.secret = add_endpoint(server, client.tenant, receiver.url, settings)
    image = upload(client, png_bytes(), "a.png", "image/png")

    ctx = context.build_context(server.settings)
    real_record_in = ctx.audit.record_in

    def failing_record_in(session: Any, event: Any, **kwargs: Any) -> bool:
        if event.action is AuditAction.PROCESSING_DONE:
            raise OperationalError("INSERT INTO audit_events", {}, Exception("injected failure"))
        return real_record_in(session, event, **kwargs)

    monkeypatch.setattr(ctx.audit, "record_in", failing_record_in)
    context.install(ctx)
    try:
        from workers.jobs import process_upload

        process_upload(image)  # no RQ job: no retries left, so the job ends the upload failed
    finally:
        context.install(None)
        ctx.close()
    record = wait_for_status(client, image, {"failed"}, timeout=5)
    assert record["error"]["code"] == "PROCESSING_UNAVAILABLE"
    assert [e.type for _, e in deliveries_of(server, client.tenant)] == ["upload.accepted", "upload.failed"]
    drain(make_dispatcher(server, settings), settled(server, client.tenant))
    assert [r.type for r in receiver.delivered()] == ["upload.accepted", "upload.failed"]


def _views(server: LiveServer, tenant: str) -> list[dict[str, Any]]:
    from upload_service.db import webhooks_repo

    with server.sessions() as session:
        rows = webhooks_repo.list_deliveries(session, tenant)
        return list(reversed(admin.delivery_views(session, rows)))


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "upload_service", "webhooks", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_concurrent_dispatchers_send_each_event_once(server: LiveServer, receiver: Receiver) -> None:
    """Three dispatchers race over the same 24 due deliveries: each is sent exactly once (leases
    by conditional UPDATE; SKIP LOCKED on PostgreSQL)."""
    settings = webhook_settings(concurrency=3)
    client = server.client()
    _endpoint, receiver.secret = add_endpoint(server, client.tenant, receiver.url, settings, "upload.accepted")
    for n in range(24):
        upload(client, png_bytes(8 + n, 8), f"{n}.png", "image/png")
    dispatchers = [make_dispatcher(server, settings) for _ in range(3)]
    errors: list[BaseException] = []

    def run(dispatcher: Dispatcher) -> None:
        try:
            drain(dispatcher, settled(server, client.tenant))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    ids = [r.webhook_id for r in receiver.received]
    assert len(ids) == 24 and len(set(ids)) == 24
    assert all(r.verified and r.answered == 200 for r in receiver.received)
    rows = deliveries_of(server, client.tenant)
    assert [d.attempts for d, _ in rows] == [1] * 24


def test_the_worker_process_runs_a_dispatcher(server: LiveServer, receiver: Receiver, tmp_path: Any) -> None:
    """``upload-service worker`` processes the image and its dispatcher thread delivers both events."""
    import dataclasses

    from tests.fixtures.workers import last_words, start_worker_process

    run_jobs_in_process(server)  # earlier tests' queued jobs first, so this one's is next
    settings = webhook_settings()
    client = server.client()
    _endpoint, receiver.secret = add_endpoint(server, client.tenant, receiver.url, settings)
    with_webhooks = Settings(**{**server.settings.model_dump(), "webhooks": settings.model_dump()})
    worker = start_worker_process(dataclasses.replace(server, settings=with_webhooks), tmp_path)
    try:
        image = upload(client, png_bytes(), "a.png", "image/png")
        wait_for_status(client, image, {"done"}, timeout=30)
        got = receiver.wait_for(2, timeout=10)
    except AssertionError:
        print(last_words(worker))
        raise
    finally:
        worker.stop(timeout=15)
    assert [(r.type, r.verified) for r in got] == [("upload.accepted", True), ("upload.done", True)]


def test_finished_deliveries_are_pruned_after_their_retention(server: LiveServer, receiver: Receiver) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    settings = webhook_settings(retention_days=1)
    client = server.client()
    _endpoint, receiver.secret = add_endpoint(server, client.tenant, receiver.url, settings, "upload.accepted")
    upload(client, png_bytes(), "a.png", "image/png")
    upload(client, png_bytes(), "b.png", "image/png")
    dispatcher = make_dispatcher(server, settings)
    drain(dispatcher, settled(server, client.tenant))
    [(old, old_event), (recent, _)] = deliveries_of(server, client.tenant)
    with session_scope(server.sessions) as session:
        session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == old.id)
            .values(finished_at=old.finished_at - timedelta(days=2))
        )
    assert dispatcher.prune() == 1
    assert [d.id for d, _ in deliveries_of(server, client.tenant)] == [recent.id]
    with server.sessions() as session:
        assert session.get(WebhookEvent, old_event.id) is None
