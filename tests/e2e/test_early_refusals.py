"""Early refusals through the real nginx: the client gets the app's JSON answer, never a 502.

The app refuses some uploads long before their body has arrived: a bad key (401, in a
dependency, before a byte is read), a declared length over the type's limit (413, from the
header), an unsupported type (415, after sniffing the first bytes), a multipart body with more
than one file part (400, after the second part's headers), a chunked body that passes the limit
(413, mid-stream). nginx streams upload bodies to the app as they arrive
(``proxy_request_buffering off``), so when the app answered and closed at once, the unread rest
of the body made its kernel reset the connection, and nginx, still writing the body, reported an
upstream failure: ``502 UPSTREAM_UNAVAILABLE`` instead of the app's answer.

Each case is sent many times (the race depends on timing), by a client that keeps sending the
body until the answer arrives, as browsers and curl do; the test counts the outcomes.
"""

from __future__ import annotations

import os
import select
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import rawhttp as raw
from tests import samples
from tests.fixtures.app import LiveServer, make_settings, start_api
from tests.fixtures.nginx import NginxFront, start_front
from tests.fixtures.services import RedisService, S3Service
from tests.integration.contract import assert_error, new_request_id
from upload_service import auth
from upload_service.db.engine import build_engine, build_sessionmaker, session_scope
from upload_service.db.migrate import upgrade_to_head
from upload_service.storage import build_object_store

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB
#: The image limit of this file's API: small, so a 64 KiB PNG is already over it.
IMAGE_LIMIT = 48 * KiB
RUNS = int(os.environ.get("EARLY_REFUSAL_RUNS", "50"))
#: The app's lingering-close bounds here (shorter than the defaults, 10 s and 2 s, so the bound
#: tests are quick; through nginx a drain ends in well under 0.1 s either way).
LINGER_SECONDS = 3.0
LINGER_IDLE_SECONDS = 1.0

#: The race is between nginx and uvicorn: one database is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass
class Stack:
    server: LiveServer
    front: NginxFront
    key: str


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_service: RedisService, s3_service: S3Service
) -> Iterator[Stack]:
    """An API with a small image limit and short lingering bounds, behind an nginx whose upload
    rate limit is out of the way (the test sends a thousand uploads from one address); every
    other setting, nginx's proxying of uploads included, is the default."""
    workdir = tmp_path_factory.mktemp("early-refusals")
    settings = make_settings(
        workdir, database_url, redis_service.url, s3_service,
        limits={"max_image_bytes": IMAGE_LIMIT},
        server={"linger_seconds": LINGER_SECONDS, "linger_idle_seconds": LINGER_IDLE_SECONDS},
    )
    settings.prepare_dirs()
    upgrade_to_head(settings.database)
    process, url = start_api(settings, workdir)
    engine = build_engine(settings.database)
    server = LiveServer(
        url=url, settings=settings, process=process, sessions=build_sessionmaker(engine),
        store=build_object_store(settings.storage), log_path=process.log_path,
    )
    front = start_front(
        server, workdir / "nginx", upload_rate="100000r/s", upload_burst=100000, api_rate="100000r/s", api_burst=100000
    )
    with session_scope(server.sessions) as session:
        key = auth.create_key(session, f"t{os.urandom(5).hex()}", auth.parse_scopes("upload,read")).key
    try:
        yield Stack(server, front, key)
    finally:
        front.process.stop()
        process.stop()
        engine.dispose()


# --- bodies ---------------------------------------------------------------------------------


def _filler(prefix: bytes, size: int, block: bytes) -> Iterator[bytes]:
    """``prefix`` then ``block`` repeated, cut at ``size`` bytes, in CHUNK-sized pieces."""
    data = bytearray(prefix)
    sent = 0
    while sent < size:
        while len(data) < CHUNK:
            data += block
        piece = bytes(data[: min(CHUNK, size - sent)])
        del data[: len(piece)]
        sent += len(piece)
        yield piece


BOUNDARY = "early-refusal-boundary"


def _file_part(index: int) -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f{index}.png\"\r\n"
        f"Content-Type: image/png\r\n\r\n"
    ).encode() + samples.png_bytes(4, 4) + b"\r\n"


@dataclass(frozen=True)
class Case:
    """One kind of early refusal: the request head and the body it comes with."""

    name: str
    status: int
    code: str
    content_type: str
    body: Callable[[int], Iterator[bytes]]
    chunked: bool = False
    bad_key: bool = False
    method: str = "POST"
    target: str = "/v1/uploads?filename=x.png"


CASES = [
    # Thousands of file parts: refused at the second one.
    Case("400-file-parts", 400, "TOO_MANY_FILES", f"multipart/form-data; boundary={BOUNDARY}",
         lambda size: _filler(_file_part(0), size, b"".join(_file_part(i) for i in range(1, 50)))),
    # A bad key: refused by the auth dependency before the route runs.
    Case("401-bad-key", 401, "UNAUTHENTICATED", "application/pdf",
         lambda size: _filler(b"%PDF-1.4\n", size, b"\0" * CHUNK), bad_key=True),
    # A declared length over the image limit: refused from the header, before any body byte.
    Case("413-declared", 413, "FILE_TOO_LARGE", "image/png",
         lambda size: _filler(samples.png_bytes(8, 8), size, b"\0" * CHUNK)),
    # No length up front: refused once the count passes the limit.
    Case("413-chunked", 413, "FILE_TOO_LARGE", "image/png",
         lambda size: _filler(samples.png_bytes(8, 8), size, b"\0" * CHUNK), chunked=True),
    # Sniffed as HTML from the first bytes.
    Case("415-html", 415, "UNSUPPORTED_MEDIA_TYPE", "text/html",
         lambda size: _filler(samples.html_bytes(), size, b" " * CHUNK)),
]
SIZES = [64 * KiB, 1 * MiB, 8 * MiB, 50 * MiB]

#: The same class on the other routes, whose bodies nginx buffers (up to 1 MiB) before it sends
#: them on: answers the router gives without reading the body. (These never failed: without
#: ``Connection: close`` uvicorn read the whole body itself; now they are drained with bounds.)
OTHER_CASES = [
    Case("405-post-to-a-record", 405, "METHOD_NOT_ALLOWED", "application/json",
         lambda size: _filler(b"[", size, b" " * CHUNK), target="/v1/uploads/0123456789abcdef"),
    Case("404-no-such-route", 404, "NOT_FOUND", "application/json",
         lambda size: _filler(b"[", size, b" " * CHUNK), target="/v1/nowhere"),
]
OTHER_SIZES = [1 * MiB]  # the cap of those routes


@dataclass
class Outcome:
    status: int | None  # None: closed without an answer
    code: str | None
    seconds: float  # from the head sent to the answer read
    sent_before_answer: int
    finished_sending: bool


def send_once(stack: Stack, case: Case, size: int) -> Outcome:
    """One upload by a client that streams the body while it waits for the answer."""
    request_id = new_request_id("early")
    key = "not-a-valid-key" if case.bad_key else stack.key
    headers = {"Authorization": f"Bearer {key}", "Content-Type": case.content_type, "X-Request-ID": request_id}
    headers.update({"Transfer-Encoding": "chunked"} if case.chunked else {"Content-Length": str(size)})
    answered = threading.Event()
    sent = [0, False]

    with raw.connect(stack.front.url) as sock:

        def send_body() -> None:
            try:
                for piece in case.body(size):
                    if answered.is_set():
                        return
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if case.chunked else piece)
                    sent[0] += len(piece)
                if case.chunked:
                    sock.sendall(b"0\r\n\r\n")
                sent[1] = True
            except OSError:
                pass  # nginx closed the connection after its answer

        started = time.monotonic()
        sock.sendall(raw.head(case.method, case.target, headers))
        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        try:
            response = raw.read_response(sock)
        except (AssertionError, OSError):
            response = None
        seconds = time.monotonic() - started
        sent_before = sent[0]
        answered.set()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    sender.join(timeout=30)
    if response is None:
        return Outcome(None, None, seconds, sent_before, bool(sent[1]))
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = "unreadable"  # an answer cut short by a reset
    if (response.status_code, code) == (case.status, case.code):
        error = assert_error(response, case.status, case.code)
        assert error["request_id"] == request_id
    return Outcome(response.status_code, code, seconds, sent_before, bool(sent[1]) and sent_before >= size)


def summarize(case: Case, size: int, outcomes: list[Outcome]) -> str:
    counts = Counter(f"{o.status}:{o.code}" for o in outcomes)
    times = sorted(o.seconds for o in outcomes)
    early = sum(1 for o in outcomes if not o.finished_sending)
    return (
        f"{case.name} {size // KiB} KiB: {dict(counts)}; answer before the body was sent: "
        f"{early}/{len(outcomes)}; median {statistics.median(times) * 1000:.0f} ms, "
        f"max {times[-1] * 1000:.0f} ms"
    )


@pytest.mark.parametrize("size", SIZES, ids=[f"{s // KiB}KiB" for s in SIZES])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_an_early_refusal_reaches_the_client_every_time(stack: Stack, case: Case, size: int) -> None:
    outcomes = [send_once(stack, case, size) for _ in range(RUNS)]
    report = summarize(case, size, outcomes)
    print(report)
    with Path(os.environ.get("EARLY_REFUSAL_REPORT", os.devnull)).open("a") as out:
        out.write(report + "\n")
    assert all(o.status == case.status and o.code == case.code for o in outcomes), report
    if size >= 50 * MiB:
        # nginx forwarded the answer while the client was still sending: it never had to send it all.
        assert not any(o.finished_sending for o in outcomes), report


@pytest.mark.parametrize("size", OTHER_SIZES, ids=[f"{s // KiB}KiB" for s in OTHER_SIZES])
@pytest.mark.parametrize("case", OTHER_CASES, ids=[c.name for c in OTHER_CASES])
def test_an_early_refusal_on_another_route_reaches_the_client_every_time(stack: Stack, case: Case, size: int) -> None:
    outcomes = [send_once(stack, case, size) for _ in range(RUNS)]
    report = summarize(case, size, outcomes)
    with Path(os.environ.get("EARLY_REFUSAL_REPORT", os.devnull)).open("a") as out:
        out.write(report + "\n")
    assert all(o.status == case.status and o.code == case.code for o in outcomes), report


# --- the lingering close's bounds, straight at the app (no nginx in between) ------------------

@pytest.fixture
def lingering_api(stack: Stack) -> LiveServer:
    return stack.server


def open_refused(server: LiveServer, headers: dict[str, str], first: bytes) -> tuple[socket.socket, float]:
    """A connection whose upload the app refuses at once (a bad key), ``first`` body bytes sent;
    its answer is read (the app answers before it drains)."""
    sock = raw.connect(server.url, timeout=10)
    request_id = new_request_id("linger")
    sock.sendall(raw.head("POST", "/v1/uploads", {
        "Authorization": "Bearer not-a-key", "Content-Type": "application/pdf", "X-Request-ID": request_id, **headers,
    }))
    sock.sendall(first)
    started = time.monotonic()
    response = raw.read_response(sock)
    assert response is not None
    assert_error(response, 401, "UNAUTHENTICATED")
    assert response.headers["connection"] == "close"
    assert time.monotonic() - started < LINGER_IDLE_SECONDS  # the answer did not wait for the drain
    return sock, started


def seconds_until_closed(
    sock: socket.socket, started: float, piece: bytes = b"", pause: float = 0.05
) -> tuple[float, int]:
    """Send ``piece`` every ``pause`` seconds (or nothing) until the app closes the connection;
    the seconds since ``started`` and the bytes sent."""
    sent = 0
    while time.monotonic() - started < 15:
        readable, _, _ = select.select([sock], [], [], pause)
        if readable:
            try:
                if sock.recv(65536) == b"":
                    break
            except OSError:
                break
        if piece:
            try:
                sock.sendall(piece)
            except OSError:
                break
            sent += len(piece)
    return time.monotonic() - started, sent


def test_a_refused_client_that_stops_sending_is_closed_after_the_idle_bound(lingering_api: LiveServer) -> None:
    sock, started = open_refused(lingering_api, {"Content-Length": str(10 * MiB)}, b"\0" * (16 * KiB))
    with sock:
        seconds, _ = seconds_until_closed(sock, started)
    assert LINGER_IDLE_SECONDS * 0.8 <= seconds < LINGER_IDLE_SECONDS + 1.0, seconds


def test_a_refused_client_that_waits_for_100_continue_is_closed_at_once(lingering_api: LiveServer) -> None:
    """Answered before the app read anything, a client that sent ``Expect: 100-continue`` never
    sends its body: the answer comes without a ``100 Continue`` and nothing is waited for."""
    sock, started = open_refused(lingering_api, {"Content-Length": str(10 * MiB), "Expect": "100-continue"}, b"")
    with sock:
        seconds, _ = seconds_until_closed(sock, started)
    assert seconds < LINGER_IDLE_SECONDS / 2, seconds


def test_a_refused_client_that_trickles_on_is_closed_after_the_time_bound(lingering_api: LiveServer) -> None:
    sock, started = open_refused(lingering_api, {"Content-Length": str(40 * MiB)}, b"\0" * (16 * KiB))
    with sock:
        seconds, _ = seconds_until_closed(sock, started, b"\0" * KiB, pause=0.1)
    assert LINGER_SECONDS * 0.9 <= seconds < LINGER_SECONDS + 1.5, seconds
    assert "closing with the request body unread" in lingering_api.log_text()


def test_a_refused_client_is_never_drained_past_the_body_cap(lingering_api: LiveServer) -> None:
    """A chunked body with no end: the app discards at most ``max_body_bytes`` of it, then
    closes; the client's writes fail soon after (the socket buffers hold a few MiB at most)."""
    cap = lingering_api.settings.limits.max_body_bytes
    chunk = b"%x\r\n%s\r\n" % (CHUNK, b"\0" * CHUNK)
    sock, started = open_refused(lingering_api, {"Transfer-Encoding": "chunked"}, chunk)
    with sock:
        seconds, sent = seconds_until_closed(sock, started, chunk, pause=0)
    assert seconds < LINGER_SECONDS, seconds  # the byte bound ended it, not the time bound
    assert cap <= sent < cap + 16 * MiB, sent
