"""``upload-service nginx-config [--output FILE] [--prefix DIR] [--check] [--ingress-annotations]``.

The rendering, ``nginx -t`` and the enforcement table are nginxconf.py's; this module only reads
the options and prints. ``--ingress-annotations`` prints the same limits as ingress-nginx
annotations instead of a config. Without ``--check`` the config goes to ``--output`` (or stdout).
With ``--check`` nginx tests it and the enforcement table is printed; the config is still written
when ``--output`` is set. Exit codes: 0 done, 1 nginx rejected the config, 2 invalid settings or
no nginx to check with.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from upload_service.nginxconf import (
    DEFAULT_PREFIX,
    NginxConfigError,
    check_nginx_config,
    enforcement_rows,
    format_enforcement,
    format_ingress_annotations,
    render_nginx_config,
)
from upload_service.settings import Settings


def run(settings: Settings, args: argparse.Namespace) -> int:
    if getattr(args, "ingress_annotations", False):
        try:
            sys.stdout.write(format_ingress_annotations(settings))
        except NginxConfigError as exc:
            print(f"error: invalid nginx settings: {exc}", file=sys.stderr)
            return 2
        return 0
    prefix = Path(args.prefix).resolve() if args.prefix else DEFAULT_PREFIX
    try:
        text = render_nginx_config(settings, prefix)
    except NginxConfigError as exc:
        print(f"error: invalid nginx settings: {exc}", file=sys.stderr)
        return 2
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    elif not args.check:
        sys.stdout.write(text)
    if not args.check:
        return 0
    try:
        result = check_nginx_config(settings)
    except FileNotFoundError as exc:
        print(f"error: cannot check: {exc}", file=sys.stderr)
        return 2
    if not result.ok:
        print(f"error: nginx rejected the rendered config:\n{result.output}", file=sys.stderr)
        return 1
    print(f"nginx -t: ok\n{result.output}\n")
    print("which layer enforces what:")
    print(format_enforcement(enforcement_rows(settings)))
    return 0
