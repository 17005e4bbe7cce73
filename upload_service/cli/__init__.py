"""The ``upload-service`` command: the parser and ``main``.

Each command group has one small module here, imported on use (so ``--help`` imports no client
library): ``serve``, ``migrate``, ``keys``, ``worker``, ``audit``, ``webhooks``, ``reconcile``,
``nginx`` (``nginx-config``) and ``dev``. They build no clients: the commands that talk to the
database, Redis or the store get them from ``clients.py``, the CLI's composition root, built
once per run and closed at its end. The work stays in its domain module (``reconciler``,
``nginxconf``, ``server``, ``workers.entry``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from upload_service.settings import Settings

if TYPE_CHECKING:
    from upload_service.cli.clients import CliClients


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="upload-service", description="A hardened upload-processing service.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API with uvicorn")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--uds", help="listen on a unix socket instead of TCP")
    serve.add_argument(
        "--workers", type=_positive_int,
        help="API processes (default: server.workers, else one per core); metrics add up across them",
    )

    commands.add_parser("migrate", help="apply database migrations")

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key; prints it once, alone on the last line")
    create.add_argument("--tenant", required=True)
    create.add_argument("--scopes", default="upload,read")
    create.add_argument("--label")
    listing = keys.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--tenant")
    revoke = keys.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")

    worker = commands.add_parser("worker", help="run an RQ worker for the processing queues")
    worker.add_argument("--queues", help="comma-separated queue names (default: all)")
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.add_argument("--simple", action="store_true", help="run jobs in-process (no fork per job)")

    audit = commands.add_parser("audit", help="check and export the audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser("verify", help="recompute the hash chains; exit 1 if one is broken")
    verify.add_argument("--tenant", help="one tenant's chain ('-' for events without a tenant)")
    export = audit.add_parser("export", help="write events as JSON Lines")
    export.add_argument("--tenant")
    export.add_argument("--since", help="ISO 8601; without an offset, UTC")
    export.add_argument("--until", help="ISO 8601, exclusive")
    export.add_argument("--output", help="write to this file instead of stdout")
    replay = audit.add_parser("replay", help="move journaled audit events into the database now")
    replay.add_argument("--journal", help="journal file (default: the audit settings' journal_path)")

    commands.add_parser("reconcile", help="enqueue accepted uploads that have no live job")
    _add_webhooks_parser(commands)

    nginx = commands.add_parser("nginx-config", help="render the nginx config from these settings")
    nginx.add_argument("--output", help="write to this file instead of stdout")
    nginx.add_argument("--prefix", help="nginx prefix dir for pid, logs and temp paths")
    nginx.add_argument("--check", action="store_true", help="run nginx -t on the result and say which layer enforces what")
    nginx.add_argument(
        "--ingress-annotations", action="store_true",
        help="print the same limits as ingress-nginx annotations (Kubernetes) instead of an nginx config",
    )

    dev = commands.add_parser("dev", help="run the whole stack locally (make run)")
    dev.add_argument("--workdir", default="var", help="where the local services keep their data")
    return parser


def _add_webhooks_parser(commands: Any) -> None:
    """``upload-service webhooks ...`` (upload_service/cli/webhooks.py)."""
    hooks = commands.add_parser("webhooks", help="manage webhook endpoints and deliveries").add_subparsers(
        dest="webhooks_command", required=True
    )
    add = hooks.add_parser("add", help="add an endpoint; prints its signing secret once")
    add.add_argument("--tenant", required=True)
    add.add_argument("--url", required=True)
    add.add_argument("--events", help="comma-separated (default: all of upload.accepted,done,failed,deleted)")
    listing = hooks.add_parser("list", help="list endpoints (never their secrets)")
    listing.add_argument("--tenant")
    remove = hooks.add_parser("remove", help="remove an endpoint and its deliveries")
    remove.add_argument("endpoint_id")
    rotate = hooks.add_parser("rotate-secret", help="new signing secret (the old one also signs for a while)")
    rotate.add_argument("endpoint_id")
    deliveries = hooks.add_parser("deliveries", help="deliveries, newest first, with their attempts (JSON Lines)")
    deliveries.add_argument("--tenant")
    deliveries.add_argument("--endpoint")
    deliveries.add_argument("--event")
    deliveries.add_argument("--status", choices=["pending", "delivered", "dead"])
    deliveries.add_argument("--limit", type=int, default=50)
    redeliver = hooks.add_parser("redeliver", help="send an event again (e.g. a dead one)")
    redeliver.add_argument("event_id")
    redeliver.add_argument("--endpoint", help="only to this endpoint")
    dispatch = hooks.add_parser("dispatch", help="run a dispatcher (workers run one too)")
    dispatch.add_argument("--once", action="store_true", help="send what is due now, then exit")
    hooks.add_parser("reencrypt", help="seal every endpoint secret with webhooks.active_key_id")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "dev":
        from upload_service.cli import dev

        return dev.run(args)
    try:
        settings = Settings()
    except ValidationError as exc:
        return refuse_settings(exc)
    if args.command == "serve":
        from upload_service.cli import serve

        return serve.run(settings, args)
    if args.command == "migrate":
        from upload_service.cli import migrate

        return migrate.run(settings)
    if args.command == "keys":
        from upload_service.cli import keys

        with _clients(settings) as clients:
            return keys.run(clients, args)
    if args.command == "worker":
        from upload_service.cli import worker

        return worker.run(settings, args)
    if args.command == "audit":
        from upload_service.cli import audit

        with _clients(settings) as clients:
            return audit.run(clients, args)
    if args.command == "webhooks":
        from upload_service.cli import webhooks

        with _clients(settings) as clients:
            return webhooks.run(clients, args)
    if args.command == "reconcile":
        from upload_service.cli import reconcile

        with _clients(settings) as clients:
            return reconcile.run(clients)
    if args.command == "nginx-config":
        from upload_service.cli import nginx

        return nginx.run(settings, args)
    return 2


def _clients(settings: Settings) -> CliClients:
    """The CLI's composition root, imported only by the commands that need clients."""
    from upload_service.cli.clients import CliClients

    return CliClients(settings)


def refuse_settings(exc: ValidationError) -> int:
    """Say which settings are unsafe and stop, without echoing their values (they may be secrets)."""
    print("refusing to start: invalid settings", file=sys.stderr)
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        print(f"  {where}: {error['msg']}", file=sys.stderr)
    return 2


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number
