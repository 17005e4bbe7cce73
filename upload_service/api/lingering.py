"""A lingering close for answers sent before the request body was read in full.

The API refuses many requests early (a bad key, a declared length over the limit, an unsupported
type, a second file part) and closes the connection. Behind nginx, which streams upload bodies
to the app as they arrive, closing a socket with unread bytes in it makes the kernel reset the
connection; nginx, still writing the body, then fails with ``ECONNRESET`` before it has read the
answer and tells the client ``502`` instead of the app's ``400``/``401``/``413``/``415``.

So when a response completes while the request body has more to come, this middleware sends the
whole answer except the end of the response, then reads and discards the rest of the body, and
only then lets the server finish (and close) the connection: nginx reads the answer, forwards it,
stops sending and closes its side, which ends the drain. This is what nginx itself does for its
own early answers (``lingering_close``, ``lingering_time``, ``lingering_timeout``), and it is
bounded the same way: never past ``max_body_bytes`` of body in all, never longer than
``linger_seconds``, never waiting more than ``idle_seconds`` for the next chunk. A client that
keeps sending past a bound gets the connection closed (and the reset).

The same holds when a request fails with an exception no handler answered: the rest of the body
is drained before the exception goes on to the outermost error handler.

Every such response carries ``Connection: close``: what is left of the body is never parsed as
the next request.
"""

from __future__ import annotations

import logging
import time

import anyio
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


def has_body(scope: Scope) -> bool:
    """Whether the request announced a body (a non-zero length, or a transfer coding)."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length" and value.strip() not in (b"", b"0"):
            return True
    return False


def expects_continue(scope: Scope) -> bool:
    """``Expect: 100-continue``: the client sends the body only once told to (the server does
    so when the app first reads), so an answer before any read means no body is coming."""
    return any(name == b"expect" and value.strip().lower() == b"100-continue" for name, value in scope["headers"])


class _Request:
    """The request body as the app reads it: how much arrived and whether it ended."""

    def __init__(self, receive: Receive, *, expects_continue: bool) -> None:
        self._receive = receive
        self.expects_continue = expects_continue
        self.received = 0
        self.ended = False
        self.read = False  # whether the app asked for the body at all

    async def receive(self) -> Message:
        self.read = True
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.ended = True
        elif message["type"] == "http.disconnect":
            self.ended = True
        return message


class LingeringCloseMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, linger_seconds: float, idle_seconds: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.linger_seconds = linger_seconds
        self.idle_seconds = idle_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        request = _Request(receive, expects_continue=expects_continue(scope))
        started = False

        async def send_lingering(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not request.ended:
                    headers = MutableHeaders(scope=message)
                    headers["Connection"] = "close"
            elif message["type"] == "http.response.body" and not message.get("more_body", False) and not request.ended:
                # All of the answer but its end, so nginx can read and forward it meanwhile.
                await send({**message, "more_body": True})
                await self.drain(request)
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        try:
            await self.app(scope, request.receive, send_lingering)
        except Exception:
            if not started and not request.ended:
                await self.drain(request)
            raise

    async def drain(self, request: _Request) -> None:
        """Read and discard the rest of the body, within the bounds."""
        if request.expects_continue and not request.read:
            return  # never told to go on: the client sends no body after this answer
        began = time.monotonic()
        deadline = began + self.linger_seconds
        discarded = 0
        while not request.ended and request.received <= self.max_body_bytes:
            wait = min(self.idle_seconds, deadline - time.monotonic())
            if wait <= 0:
                break
            before = request.received
            with anyio.move_on_after(wait) as waiting:
                await request.receive()
            discarded += request.received - before
            if waiting.cancelled_caught:
                break  # nothing arrived within the idle bound, or the deadline passed
        seconds = time.monotonic() - began
        if request.ended:
            log.debug("drained %d bytes of a refused body in %.3f s", discarded, seconds)
        else:
            log.info(
                "closing with the request body unread: %d bytes discarded in %.2f s, %d received in all",
                discarded, seconds, request.received,
            )
