"""``upload-service dev [--workdir DIR]``: the whole stack on this machine (``make run``; devstack/stack.py)."""

from __future__ import annotations

import argparse

from upload_service.devstack.stack import run_dev_stack


def run(args: argparse.Namespace) -> int:
    return run_dev_stack(args)
