"""``upload-service keys create|list|revoke``."""

from __future__ import annotations

import argparse

from upload_service import auth
from upload_service.db.engine import build_engine, build_sessionmaker, session_scope
from upload_service.db import repository
from upload_service.settings import Settings


def run(settings: Settings, args: argparse.Namespace) -> int:
    engine = build_engine(settings.database)
    sessions = build_sessionmaker(engine)
    try:
        with session_scope(sessions) as session:
            if args.keys_command == "create":
                new = auth.create_key(session, args.tenant, auth.parse_scopes(args.scopes), label=args.label)
                print(f"created key {new.record.id} for tenant {new.record.tenant} with scopes {','.join(new.record.scopes)}")
                print("store it now; it is not shown again:")
                print(new.key)
            elif args.keys_command == "list":
                for key in repository.list_api_keys(session, args.tenant):
                    state = "revoked" if key.revoked_at else "active"
                    print(f"{key.id}\t{key.tenant}\t{','.join(key.scopes)}\t{state}\t{key.created_at:%Y-%m-%dT%H:%M:%SZ}\t{key.label or ''}")
            elif args.keys_command == "revoke":
                key = auth.revoke_key(session, args.key_id)
                print(f"revoked key {key.id} of tenant {key.tenant}")
    except (ValueError, LookupError) as exc:
        print(f"error: {exc}")
        return 2
    finally:
        engine.dispose()
    return 0
