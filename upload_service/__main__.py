"""The ``upload-service`` command: serve, migrate, keys, worker, reconcile, dev stack."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from upload_service.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="upload-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API with uvicorn")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--uds", help="listen on a unix socket instead of TCP")
    serve.add_argument("--workers", type=int, default=1)

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

    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "serve":
        return _serve(settings, args)
    if args.command == "migrate":
        from upload_service.db.migrate import upgrade_to_head

        upgrade_to_head(settings.database)
        print("database is at the latest revision")
        return 0
    if args.command == "keys":
        from upload_service import cli_keys

        return cli_keys.run(settings, args)
    parser.error(f"unknown command {args.command}")
    return 2


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from upload_service.logs import configure_logging

    configure_logging()
    options: dict[str, object] = {
        "factory": True,
        "proxy_headers": True,
        "forwarded_allow_ips": ",".join(settings.server.trusted_proxies),
        "server_header": False,
        "log_config": None,
        "workers": args.workers,
        "timeout_graceful_shutdown": 10,
    }
    if args.uds:
        options["uds"] = args.uds
    else:
        options["host"] = args.host or settings.server.host
        options["port"] = args.port or settings.server.port
    uvicorn.run("upload_service.app:app_factory", **options)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
