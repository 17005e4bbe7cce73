"""``upload-service keys create|list|revoke``."""

from __future__ import annotations

import argparse

from upload_service import auth
from upload_service.audit import AuditAction, AuditEvent
from upload_service.cli.clients import CliClients
from upload_service.db import repository
from upload_service.db.engine import session_scope


def run(clients: CliClients, args: argparse.Namespace) -> int:
    event: AuditEvent | None = None
    try:
        with session_scope(clients.sessions) as session:
            if args.keys_command == "create":
                new = auth.create_key(session, args.tenant, auth.parse_scopes(args.scopes), label=args.label)
                event = _key_event(AuditAction.KEY_CREATED, new.record.tenant, new.record.id, new.record.scopes)
                print(f"created key {new.record.id} for tenant {new.record.tenant} with scopes {','.join(new.record.scopes)}")
                print("store it now; it is not shown again:")
                print(new.key)
            elif args.keys_command == "list":
                for key in repository.list_api_keys(session, args.tenant):
                    state = "revoked" if key.revoked_at else "active"
                    print(f"{key.id}\t{key.tenant}\t{','.join(key.scopes)}\t{state}\t{key.created_at:%Y-%m-%dT%H:%M:%SZ}\t{key.label or ''}")
            elif args.keys_command == "revoke":
                key = auth.revoke_key(session, args.key_id)
                event = _key_event(AuditAction.KEY_REVOKED, key.tenant, key.id, key.scopes)
                print(f"revoked key {key.id} of tenant {key.tenant}")
        if event is not None:
            clients.audit.record(event)
    except (ValueError, LookupError) as exc:
        print(f"error: {exc}")
        return 2
    return 0


def _key_event(action: AuditAction, tenant: str, key_id: str, scopes: list[str]) -> AuditEvent:
    return AuditEvent(action=action, outcome="success", tenant=tenant, key_id=key_id, details={"scopes": scopes})
