"""Audit events of a request: collected while it is handled, recorded after the response.

Routes and handlers call ``note(request, event)``; every response of the API — success or error —
carries ``flush_task(request)`` as its background task, which hands the events, once the client
has its answer, to the process's audit sink: the group commit writer takes them into its next
batch (no thread, no waiting; a failed batch falls back to the audit writer's retries and its
journal). Each event is also one JSON log line. The upload route notes nothing of its own: the
upload service audits its decisions itself.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request

from upload_service.api.requestid import request_id_of
from upload_service.audit import AuditAction, AuditEvent
from upload_service.service import AuditSink

log = logging.getLogger("upload_service.audit.events")


def note(request: Request, action: AuditAction, outcome: str, **fields: Any) -> None:
    """Queue an event of this request; who and from where are filled in from the request.

    Never raises: recording a decision must not change it. ``AuditEvent`` clamps what a client
    can make long (paths, types, addresses); an event that still can't be built (a bug) is
    logged and recorded in a minimal form that names the failure, so nothing is dropped.
    """
    try:
        principal = request.scope.get("state", {}).get("principal")
        fields.setdefault("tenant", principal.tenant if principal is not None else None)
        fields.setdefault("key_id", principal.key_id if principal is not None else None)
        if principal is not None and principal.token_id is not None:  # an upload token's request
            fields["details"] = {**(fields.get("details") or {}), "token_id": principal.token_id}
        event = AuditEvent(
            action=action,
            outcome=outcome,
            client_addr=request.client.host if request.client else None,
            request_id=request_id_of(request.scope),
            **fields,
        )
    except Exception as exc:  # noqa: BLE001 - the request goes on; the event in its minimal form
        log.error("audit event %s could not be built: %s", getattr(action, "value", action), exc, exc_info=True)
        event = _minimal_event(request, action, outcome, fields, exc)
        if event is None:
            return
    _pending(request).append(event)


def _minimal_event(
    request: Request, action: AuditAction, outcome: str, fields: dict[str, Any], exc: Exception
) -> AuditEvent | None:
    """The event without the fields that broke it: only what our own code vouches for."""
    try:
        return AuditEvent(
            action=action,
            outcome=outcome if outcome in ("success", "failure") else "failure",
            request_id=request_id_of(request.scope) or None,
            error_code=fields.get("error_code"),
            details={"audit_error": type(exc).__name__},
        )
    except Exception:  # noqa: BLE001 - the log line above is all that is left
        log.exception("audit event %s dropped", getattr(action, "value", action))
        return None


def note_auth_failure(request: Request, code: str) -> None:
    """A request refused before its caller was known, or for a missing scope."""
    note(request, AuditAction.AUTH_FAILED, "failure", error_code=code, details={"path": request.url.path})


def _pending(request: Request) -> list[AuditEvent]:
    events: list[AuditEvent] = request.scope.setdefault("state", {}).setdefault("audit_events", [])
    return events


def flush_task(request: Request) -> BackgroundTask | None:
    """The background task that writes this request's events (and forgets them here)."""
    events = _pending(request)
    services = getattr(request.app.state, "services", None)
    if not events or services is None:
        return None
    taken = list(events)
    events.clear()
    return BackgroundTask(write_events, services.audit_sink, taken)


def failure_events_task(request: Request) -> BackgroundTask | None:
    """For an error response: the request's failure events only (a success noted before a
    later failure, such as a commit that failed, did not happen)."""
    events = _pending(request)
    events[:] = [e for e in events if e.outcome == "failure"]
    return flush_task(request)


async def write_events(sink: AuditSink, events: list[AuditEvent]) -> None:
    """Runs on the event loop after the response: ``record`` only queues (and logs) the event."""
    for event in events:
        sink.record(event)
