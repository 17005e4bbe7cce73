"""The dispatcher: claim due deliveries, send them, record every attempt, retry or give up.

At least once: a delivery is pending until a 2xx is recorded. A dispatcher holds a lease
(``claimed_until``) on what it sends; if it dies mid-send the lease runs out and any dispatcher
sends it again (same ``webhook-id``: receivers de-duplicate on it). Several dispatchers never
send one delivery at once: leases are taken with a conditional UPDATE (and ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL). Failed attempts are retried after an exponential backoff with jitter
(``retry_base_seconds`` doubled per attempt, capped at ``retry_max_interval_seconds``); after
``max_attempts`` or once the next attempt would fall beyond ``max_age_seconds`` the delivery is
``dead``, with a ``webhook:dead`` audit event in the same transaction.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from upload_service.audit import AuditAction, AuditEvent, AuditWriter
from upload_service.db import webhooks_repo
from upload_service.db.engine import session_scope
from upload_service.db.webhook_models import DeliveryStatus, WebhookAttempt, WebhookEndpoint
from upload_service.settings import WebhookSettings
from upload_service.webhooks.events import sign
from upload_service.webhooks.http import DestinationPolicy, HttpLimits, Resolver, SendResult, post, system_resolver
from upload_service.webhooks.secretbox import SecretBox, WebhookKeyError

log = logging.getLogger("upload_service.webhooks")

USER_AGENT = "upload-service-webhooks/1"
#: ``outcome`` label values of ``upload_webhook_deliveries_total``.
DELIVERED, RETRY, DEAD = "delivered", "retry", "dead"
PRUNE_INTERVAL_SECONDS = 3600.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def backoff_seconds(attempts: int, settings: WebhookSettings, rng: random.Random | None = None) -> float:
    """The wait after the ``attempts``-th failed attempt: half fixed, half random ("equal jitter")."""
    ceiling = min(settings.retry_base_seconds * 2 ** max(attempts - 1, 0), settings.retry_max_interval_seconds)
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


@dataclass
class Dispatcher:
    settings: WebhookSettings
    sessions: sessionmaker[Session]
    box: SecretBox
    audit: AuditWriter | None = None
    #: Called with each attempt's outcome (``delivered``, ``retry``, ``dead``): the metrics.
    on_outcome: Callable[[str], None] | None = None
    resolver: Resolver = system_resolver
    name: str = field(default_factory=lambda: secrets.token_hex(8))

    def __post_init__(self) -> None:
        self.policy = DestinationPolicy.of(self.settings)
        self.limits = HttpLimits.of(self.settings)
        self._skip_locked = self.sessions.kw["bind"].dialect.name == "postgresql"

    def run_once(self) -> int:
        """Lease up to ``concurrency`` due deliveries and send them all at once (none waits in
        a queue while its lease runs down); the number attempted."""
        token = secrets.token_hex(16)
        now = utcnow()
        with session_scope(self.sessions) as session:
            claimed = webhooks_repo.claim_due(
                session, now, now + timedelta(seconds=self.settings.lease_seconds), token,
                self.settings.concurrency, skip_locked=self._skip_locked,
            )
        if not claimed:
            return 0
        if len(claimed) == 1:
            self._deliver(claimed[0], token)
        else:
            with ThreadPoolExecutor(max_workers=len(claimed)) as pool:
                list(pool.map(lambda d: self._deliver(d, token), claimed))
        return len(claimed)

    def run_forever(self, stop: threading.Event) -> None:
        """Until ``stop``: batches back to back while there is work, else a poll interval's
        sleep; finished deliveries past their retention are pruned now and then."""
        log.info("webhook dispatcher %s started", self.name)
        next_prune = time.monotonic()
        while not stop.is_set():
            try:
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_INTERVAL_SECONDS
                    self.prune()
                sent = self.run_once()
            except Exception:  # noqa: BLE001 - a DB outage: try again next round
                log.warning("webhook dispatch round failed", exc_info=True)
                sent = 0
            if not sent:
                stop.wait(self.settings.poll_interval_seconds)

    def prune(self) -> int:
        """Forget delivered and dead deliveries finished more than ``retention_days`` ago (with
        their attempts), and events left without a delivery."""
        cutoff = utcnow() - timedelta(days=self.settings.retention_days)
        with session_scope(self.sessions) as session:
            removed = webhooks_repo.prune_finished(session, cutoff)
        if removed:
            log.info("pruned %d finished webhook deliveries older than %d days", removed, self.settings.retention_days)
        return removed

    # --- one delivery -------------------------------------------------------------------------

    def _deliver(self, delivery_id: int, token: str) -> None:
        try:
            with self.sessions() as session:
                found = webhooks_repo.delivery_with_event(session, delivery_id)
            if found is None:
                return  # its endpoint was removed meanwhile
            delivery, event, endpoint = found
            body = event.body.encode()
            try:
                signing = self._secrets(endpoint)
            except WebhookKeyError as exc:
                result = SendResult(None, 0, f"cannot sign: {exc}")
            else:
                timestamp = int(time.time())
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                    "webhook-id": event.id,
                    "webhook-timestamp": str(timestamp),
                    "webhook-signature": sign(signing, event.id, timestamp, body),
                }
                result = post(endpoint.url, body, headers, self.policy, self.limits, resolver=self.resolver)
            self._record(delivery_id, token, delivery.attempts, delivery.created_at, endpoint, event.id, event.type,
                         event.upload_id, result)
        except SQLAlchemyError:
            # The lease runs out and the delivery is tried again: at least once, never lost.
            log.warning("could not record webhook delivery %s", delivery_id, exc_info=True)

    def _secrets(self, endpoint: WebhookEndpoint) -> list[str]:
        signing = [self.box.open(endpoint.id, endpoint.secret_box)]
        expires = endpoint.previous_secret_expires_at
        if endpoint.previous_secret_box and expires is not None and expires > utcnow():
            signing.append(self.box.open(endpoint.id, endpoint.previous_secret_box))
        return signing

    def _record(
        self, delivery_id: int, token: str, attempts_before: int, started_at: datetime, endpoint: WebhookEndpoint,
        event_id: str, event_type: str, upload_id: str, result: SendResult,
    ) -> None:
        now = utcnow()
        attempts = attempts_before + 1
        error = result.error[:512] if result.error else None
        outcome = DELIVERED if result.ok else RETRY
        values: dict[str, object] = {
            "attempts": attempts, "last_status_code": result.status_code, "last_error": error, "last_attempt_at": now,
        }
        if result.ok:
            values.update(status=DeliveryStatus.DELIVERED, finished_at=now)
        else:
            wait = backoff_seconds(attempts, self.settings)
            too_old = now + timedelta(seconds=wait) > started_at + timedelta(seconds=self.settings.max_age_seconds)
            if attempts >= self.settings.max_attempts or too_old:
                outcome = DEAD
                values.update(status=DeliveryStatus.DEAD, finished_at=now)
            else:
                values.update(next_attempt_at=now + timedelta(seconds=wait))
        with session_scope(self.sessions) as session:
            if not webhooks_repo.finish_attempt(session, delivery_id, token, **values):
                if not webhooks_repo.delivery_exists(session, delivery_id):
                    return  # the endpoint was removed while we sent
                # Our lease ran out and another dispatcher took over: the attempt goes on
                # record, the delivery's state is theirs to set.
                outcome = DELIVERED if result.ok else RETRY
            elif outcome == DEAD and self.audit is not None:
                self.audit.record_in(session, _dead_event(endpoint, event_id, event_type, upload_id, attempts, error))
            webhooks_repo.add_attempt(
                session,
                WebhookAttempt(
                    delivery_id=delivery_id, attempted_at=now, outcome=outcome, status_code=result.status_code,
                    latency_ms=result.latency_ms, error=error,
                ),
            )
        log.info(
            "webhook %s %s to endpoint %s: %s", event_id, event_type, endpoint.id, outcome,
            extra={"tenant": endpoint.tenant, "upload_id": upload_id, "status_code": result.status_code,
                   "latency_ms": result.latency_ms, "error": error},
        )
        if self.on_outcome is not None:
            try:
                self.on_outcome(outcome)
            except Exception:  # noqa: BLE001 - metrics never stop deliveries
                log.warning("could not count a webhook outcome", exc_info=True)


def _dead_event(
    endpoint: WebhookEndpoint, event_id: str, event_type: str, upload_id: str, attempts: int, error: str | None
) -> AuditEvent:
    return AuditEvent(
        action=AuditAction.WEBHOOK_DEAD,
        outcome="failure",
        tenant=endpoint.tenant,
        upload_id=upload_id,
        error_code="WEBHOOK_UNDELIVERED",
        details={"event_id": event_id, "type": event_type, "endpoint_id": endpoint.id, "attempts": attempts,
                 "last_error": error},
    )
