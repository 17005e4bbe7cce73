"""JSON request bodies with bounded nesting, for every route of a router that opts in.

FastAPI decodes a JSON body with ``json.loads`` before any dependency or endpoint runs, so the
depth bound has to come first: ``BoundedJsonRoute`` reads the (already size-capped) body, scans
its nesting without recursion and answers ``422 VALIDATION_FAILED`` past
``limits.max_json_depth``; only then does FastAPI parse it (from the cached bytes).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from anyio import to_thread
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from upload_service.ingest.jsondepth import check_json_depth

_INLINE_SCAN_BYTES = 64 * 1024
#: Used when the app has no services yet (it always has them once the lifespan ran).
DEFAULT_MAX_DEPTH = 32


def is_json(content_type: str | None) -> bool:
    """What FastAPI decodes as JSON: no type at all, ``application/json`` or ``+json``."""
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class BoundedJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler  # no JSON body to decode (the streaming upload route reads its own)

        async def bounded(request: Request) -> Response:
            if is_json(request.headers.get("content-type")):
                body = await request.body()  # cached on the request: FastAPI decodes these bytes
                services = getattr(request.app.state, "services", None)
                max_depth = services.settings.limits.max_json_depth if services is not None else DEFAULT_MAX_DEPTH
                if len(body) > _INLINE_SCAN_BYTES:  # ~0.1 s per MiB at worst: off the event loop
                    await to_thread.run_sync(check_json_depth, body, max_depth, "body")
                else:
                    check_json_depth(body, max_depth, "body")
            return await handler(request)

        return bounded
