"""``upload-service reconcile``: one round of the reconciler (reconciler.py), then its summary."""

from __future__ import annotations

from upload_service.cli.clients import CliClients
from upload_service.reconciler import ReconcileReport, reconcile


def reconcile_once(clients: CliClients) -> ReconcileReport:
    """One round with the CLI's clients, interrupted deletes included (they need the store)."""
    return reconcile(clients.settings, clients.sessions, clients.queue, store=clients.store, audit=clients.audit)


def run(clients: CliClients) -> int:
    print(reconcile_once(clients).summary())
    return 0
