"""Drive a request body — multipart or raw — through the ingest loop into the upload's sink."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field

import anyio
from anyio import to_thread

from upload_service.errors import ErrorCode, ServiceError
from upload_service.ingest.filenames import sanitize_filename
from upload_service.ingest.limits import check_content_length, upfront_limit
from upload_service.ingest.multipart import MultipartReader
from upload_service.ingest.sniff import TypeSniffer, normalize_media_type
from upload_service.ingest.stream import FileSink, IngestedFile, OriginalSink, SinkOpener
from upload_service.settings import LimitSettings


@dataclass(frozen=True)
class BodyHeaders:
    """What the request says about its body before any of it is read."""

    content_type: str | None
    content_length: str | None
    filename: str | None = None  # ``?filename=`` of a raw body

    @property
    def is_multipart(self) -> bool:
        return normalize_media_type(self.content_type).startswith("multipart/")


class CountedBody:
    """A request body as it arrives, counting the bytes read (the metrics' and the rejection
    event's ``received``). ``disconnects``: the exception types the server raises when the
    client goes away mid-body; they become a ``400`` refusal like any other. The route wraps
    the body once, and the service reads the same count. ``last_read_at`` (``time.perf_counter()``)
    is when its latest chunk was read (of an accepted body: its last byte), None before any."""

    def __init__(self, body: AsyncIterable[bytes], disconnects: tuple[type[BaseException], ...] = ()) -> None:
        self._body = body
        self._disconnects = disconnects
        self.count = 0
        self.last_read_at: float | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._body:
                self.count += len(chunk)
                self.last_read_at = time.perf_counter()
                yield chunk
        except self._disconnects:
            raise ServiceError(ErrorCode.BAD_REQUEST, "the client disconnected before the body was complete") from None


@dataclass(frozen=True)
class ReceivedBody:
    file: IngestedFile
    fields: dict[str, bytes] = field(default_factory=dict)


def check_declared_length(headers: BodyHeaders, limits: LimitSettings) -> None:
    """413 before the first body byte when Content-Length is already over the limit."""
    limit = upfront_limit(limits, declared_type=headers.content_type, raw_body=not headers.is_multipart)
    check_content_length(headers.content_length, limit)


async def receive_body(
    body: AsyncIterable[bytes],
    headers: BodyHeaders,
    open_sink: SinkOpener,
    limits: LimitSettings,
    sniffer: TypeSniffer,
) -> ReceivedBody:
    """Stream the body into the sink ``open_sink`` opens once the file's type is decided; raise
    ServiceError on the first rule it breaks.

    A sink that sends in the background (the S3 writer) is waited for — in a thread, so the
    event loop serves others meanwhile — whenever it says it is congested: the reader never
    runs more than the sink's bound ahead of the object store, and memory stays flat.

    The whole body must arrive within ``limits.max_body_seconds``: nginx's
    ``client_body_timeout`` only bounds the pause between two reads, so a client sending a byte
    every few seconds would otherwise hold a connection, a spool file and a worker slot for as
    long as it likes. Past the deadline the read is cancelled and the upload refused with
    ``408 REQUEST_TIMEOUT`` (the sink is aborted with the refusal, as with any other).
    """
    check_declared_length(headers, limits)
    with anyio.move_on_after(limits.max_body_seconds) as deadline:
        return await _receive(body, headers, open_sink, limits, sniffer)
    assert deadline.cancelled_caught
    raise body_timeout(limits.max_body_seconds)


def body_timeout(seconds: int) -> ServiceError:
    return ServiceError(
        ErrorCode.REQUEST_TIMEOUT,
        f"the request body did not arrive within {seconds} seconds",
        details={"limit_seconds": seconds},
    )


async def _receive(
    body: AsyncIterable[bytes],
    headers: BodyHeaders,
    open_sink: SinkOpener,
    limits: LimitSettings,
    sniffer: TypeSniffer,
) -> ReceivedBody:
    files: list[FileSink] = []
    opened: list[OriginalSink] = []

    def open_target(detected_type: str) -> OriginalSink:
        target = open_sink(detected_type)
        opened.append(target)
        return target

    async def keep_pace() -> None:
        """The event loop never blocks on the file's hash or its sink: a thread waits."""
        if files and files[0].hash.behind():
            await to_thread.run_sync(files[0].hash.wait)
        if opened and opened[0].congested():
            await to_thread.run_sync(opened[0].wait)

    async def finished(file: FileSink) -> IngestedFile:
        if file.hash.pending():
            await to_thread.run_sync(file.hash.wait, 0)
        return file.finish()

    def open_file(filename: str | None, declared_type: str | None) -> FileSink:
        file = FileSink(
            None,
            limits,
            sniffer,
            declared_type=declared_type,
            filename=sanitize_filename(filename, max_chars=limits.max_filename_chars),
            open_target=open_target,
        )
        files.append(file)
        return file

    if not headers.is_multipart:
        sink = open_file(headers.filename, headers.content_type)
        async for chunk in body:
            sink.write(chunk)
            await keep_pace()
        return ReceivedBody(file=await finished(sink))

    assert headers.content_type is not None
    reader = MultipartReader(headers.content_type, limits, open_file)
    async for chunk in body:
        reader.feed(chunk)
        await keep_pace()
        if reader.ended:
            break
    form = reader.finish()
    return ReceivedBody(file=await finished(form.file), fields=form.fields)
