"""``upload-service webhooks add|list|remove|rotate-secret|deliveries|redeliver|dispatch|reencrypt``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from upload_service.audit import AuditAction, AuditEvent
from upload_service.cli.clients import CliClients
from upload_service.db import webhooks_repo
from upload_service.db.engine import session_scope
from upload_service.errors import ServiceError
from upload_service.webhooks import admin

log = logging.getLogger("upload_service.webhooks")


def run(clients: CliClients, args: argparse.Namespace) -> int:
    """0: done; 2: refused (bad arguments, unknown id, no key, database trouble)."""
    settings = clients.settings
    command = args.webhooks_command
    try:
        if command == "dispatch":
            return _dispatch(clients, args.once)
        event: AuditEvent | None = None
        with session_scope(clients.sessions) as session:
            if command == "add":
                box = admin.secret_box_or_error(settings.webhooks)
                new = admin.add_endpoint(session, settings.webhooks, box, args.tenant, args.url, args.events)
                endpoint = new.endpoint
                event = _event(AuditAction.WEBHOOK_ENDPOINT_ADDED, endpoint.tenant, endpoint.id, url=endpoint.url,
                               events=endpoint.events)
                print(f"added webhook endpoint {endpoint.id} for tenant {endpoint.tenant}: {endpoint.url}")
                print(f"events: {','.join(endpoint.events)}")
                print("signing secret; store it now, it is not shown again:")
                print(new.secret)
            elif command == "list":
                for endpoint in webhooks_repo.list_endpoints(session, args.tenant):
                    print(f"{endpoint.id}\t{endpoint.tenant}\t{endpoint.url}\t{','.join(endpoint.events)}\t"
                          f"{endpoint.created_at:%Y-%m-%dT%H:%M:%SZ}")
            elif command == "remove":
                endpoint = admin.remove_endpoint(session, None, args.endpoint_id)
                event = _event(AuditAction.WEBHOOK_ENDPOINT_REMOVED, endpoint.tenant, endpoint.id, url=endpoint.url)
                print(f"removed webhook endpoint {endpoint.id} of tenant {endpoint.tenant}")
            elif command == "rotate-secret":
                box = admin.secret_box_or_error(settings.webhooks)
                new = admin.rotate_secret(session, settings.webhooks, box, None, args.endpoint_id)
                event = _event(AuditAction.WEBHOOK_SECRET_ROTATED, new.endpoint.tenant, new.endpoint.id)
                print(f"new signing secret for {new.endpoint.id}; store it now, it is not shown again:")
                print(new.secret)
            elif command == "deliveries":
                rows = webhooks_repo.list_deliveries(
                    session, args.tenant, endpoint_id=args.endpoint, event_id=args.event, status=args.status,
                    limit=max(1, min(args.limit, 1000)),
                )
                for view in admin.delivery_views(session, rows):
                    print(json.dumps(view, sort_keys=True))
            elif command == "redeliver":
                found = admin.event_of(session, None, args.event_id)
                count = admin.redeliver(session, None, args.event_id, args.endpoint)
                event = _event(AuditAction.WEBHOOK_REDELIVERED, found.tenant, args.endpoint, event_id=found.id,
                               deliveries=count)
                print(f"event {found.id}: {count} deliveries pending again")
            elif command == "reencrypt":
                box = admin.secret_box_or_error(settings.webhooks)
                print(f"re-sealed {admin.reencrypt(session, box)} secrets with key {box.active_key_id}")
        if event is not None:
            clients.audit.record(event)
    except ServiceError as exc:
        print(f"error: {exc.message}" + (f" ({exc.internal})" if exc.internal else ""))
        return 2
    except SQLAlchemyError as exc:
        print(f"error: database unavailable: {type(exc).__name__}")
        return 2
    return 0


def _dispatch(clients: CliClients, once: bool) -> int:
    from upload_service.logs import configure_logging
    from upload_service.webhooks.dispatcher import Dispatcher
    from upload_service.webhooks.metrics_sink import redis_outcome_counter

    configure_logging()
    box = admin.secret_box_or_error(clients.settings.webhooks)
    dispatcher = Dispatcher(
        clients.settings.webhooks, clients.sessions, box, audit=clients.audit,
        on_outcome=redis_outcome_counter(clients.redis),
    )
    if once:
        while dispatcher.run_once():
            pass
        return 0
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    dispatcher.run_forever(stop)
    return 0


def _event(action: AuditAction, tenant: str, endpoint_id: str | None, **details: Any) -> AuditEvent:
    return AuditEvent(
        action=action, outcome="success", tenant=tenant,
        details={**({"endpoint_id": endpoint_id} if endpoint_id else {}), **details},
    )
