"""An artifact's presigned URL as a page can use it: a ``307`` redirect (``<img src>`` with a
Bearer header is impossible, so pages ask for the link instead), or, with ``?redirect=false``
or ``Accept: application/json``, the JSON ``{"url", "expires_at"}``.

``expires_at`` is taken before the URL is signed, so the URL is valid at least until then.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, RedirectResponse, Response


class ArtifactLink(BaseModel):
    url: str
    expires_at: datetime


#: For the route's OpenAPI ``responses``.
LINK_RESPONSE = {
    200: {"model": ArtifactLink, "description": "With `?redirect=false` or `Accept: application/json`: the URL and its expiry."}
}


def link_expiry(ttl_seconds: int) -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=ttl_seconds)


def wants_json(redirect: bool, accept: str | None) -> bool:
    """``?redirect=false``, or an ``Accept`` that names ``application/json`` itself."""
    if not redirect:
        return True
    ranges = [part.split(";", 1)[0].strip().lower() for part in (accept or "").split(",")]
    return "application/json" in ranges


def artifact_link_response(
    url: str, expires_at: datetime, *, as_json: bool, background: BackgroundTask | None
) -> Response:
    headers = {"Cache-Control": "no-store"}
    if as_json:
        body = ArtifactLink(url=url, expires_at=expires_at).model_dump(mode="json")
        return JSONResponse(body, headers=headers, background=background)
    return RedirectResponse(url, status_code=307, headers=headers, background=background)
