"""Dispatchers count their outcomes in Redis, like jobs do, so the API's ``/metrics`` shows
every dispatcher's (``upload_webhook_deliveries_total{outcome}``)."""

from __future__ import annotations

from collections.abc import Callable

from redis import Redis

from upload_service.metrics import record_webhook_outcome


def redis_outcome_counter(connection: Redis) -> Callable[[str], None]:
    return lambda outcome: record_webhook_outcome(connection, outcome)
