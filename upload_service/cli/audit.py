"""``upload-service audit verify|export|replay``: operators' access to the trail."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from upload_service.audit import chain_name, count_events, iter_events, verify_chain
from upload_service.cli.clients import CliClients


def run(clients: CliClients, args: argparse.Namespace) -> int:
    """0: done (chain intact); 1: chain broken; 2: bad arguments or database trouble."""
    try:
        if args.audit_command == "verify":
            return _verify(clients.sessions, getattr(args, "tenant", None))
        if args.audit_command == "export":
            since, until = _parse_time(args.since, "--since"), _parse_time(args.until, "--until")
            with _output(args.output) as out:
                with clients.sessions() as session:
                    for stored in iter_events(session, tenant=args.tenant, since=since, until=until):
                        out.write(json.dumps(stored.to_dict(), sort_keys=True, separators=(",", ":")) + "\n")
            return 0
        if args.audit_command == "replay":
            writer = clients.audit_for_journal(Path(args.journal) if args.journal else None)
            replayed = writer.replay_journal()
            print(f"replayed {replayed} audit events; {writer.journal_backlog()} still waiting")
            return 0
        print(f"error: unknown audit command {args.audit_command!r}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        # Class name only: driver messages can carry hosts and users.
        print(f"error: database unavailable or not migrated ({type(exc).__name__})", file=sys.stderr)
        return 2


def _verify(sessions: sessionmaker[Session], tenant: str | None) -> int:
    with sessions() as session:
        problems = verify_chain(session, tenant)
        total = count_events(session, chain=None if tenant is None else chain_name(tenant))
    for problem in problems:
        print(f"audit chain broken: {problem}")
    if problems:
        return 1
    print(f"audit chain intact: {total} events")
    return 0


def _parse_time(value: str | None, flag: str) -> datetime | None:
    """ISO 8601; a value without an offset is taken as UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{flag} must be an ISO 8601 date or time, not {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


@contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """stdout, or a file written under a temporary name (mode 0600: it names clients) and
    renamed into place only when complete."""
    if path is None or path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise

