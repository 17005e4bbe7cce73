"""``upload-service reconcile``: one round of the reconciler (reconciler.py), then its summary."""

from __future__ import annotations

from upload_service.reconciler import reconcile_once
from upload_service.settings import Settings


def run(settings: Settings) -> int:
    print(reconcile_once(settings).summary())
    return 0
