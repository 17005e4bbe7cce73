"""Requests by route template, method and status (the 5xx-ratio and readiness alerts read it).

Labels are bounded: the route is the matched template (``/v1/uploads/{upload_id}``), never the
raw path, and anything unmatched is ``unmatched``; methods outside the usual set are ``other``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else UNMATCHED


class HttpMetricsMiddleware:
    """Counts into the ``http_requests`` counter of the app's ``ApiMetrics`` (built in the
    lifespan, so looked up per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception that escapes everything is a 500 to the client

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            services = getattr(getattr(scope.get("app"), "state", None), "services", None)
            method = scope.get("method", "")
            if services is not None:
                services.metrics.http_requests.labels(
                    method=method if method in _METHODS else "other", route=route_label(scope), status=str(status)
                ).inc()
