"""``upload-service nginx-config``: the nginx front rendered from the settings (nginxconf.py)."""

from __future__ import annotations

import argparse

from upload_service.nginxconf import run_cli
from upload_service.settings import Settings


def run(settings: Settings, args: argparse.Namespace) -> int:
    return run_cli(settings, args)
