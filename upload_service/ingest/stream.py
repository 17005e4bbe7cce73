"""The one loop every file byte goes through: count, hash, sniff, write.

``FileSink.write`` is called with each chunk as it arrives. It holds back only the first
``sniff_bytes`` until the type is decided — so the type is judged before the rest of the body is
read — and cuts the upload off as soon as it passes its limit (the body cap until the type is
known, the type's own limit after). Memory per upload is bounded by the chunk size.

Where the bytes go is the caller's choice, through the small ``OriginalSink`` interface: a spool
file, or a writer that streams the original to the object store while the body arrives. With
``open_target`` the sink is opened only once the type is decided (it is told that type), so
nothing is stored for a file that is refused by its type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from upload_service.errors import ErrorCode, ServiceError
from upload_service.ingest.filehash import FileHash
from upload_service.ingest.limits import too_large
from upload_service.ingest.sniff import TypeSniffer, check_type
from upload_service.settings import LimitSettings


class ByteTarget(Protocol):
    def write(self, data: bytes | memoryview) -> None: ...


class OriginalSink(Protocol):
    """Where the accepted bytes of one upload go (defined here, implemented by storage backends).

    ``write`` takes the bytes and must not wait on the network; a sink that sends in the
    background says ``congested()`` when the reader should stop reading until ``wait()`` (a
    blocking call, run in a thread) returns. ``commit()`` and ``abort()`` are the caller's.
    """

    def write(self, data: bytes | memoryview) -> None: ...

    def congested(self) -> bool: ...

    def wait(self) -> None: ...


#: Opens the sink of one upload once its type is decided (called with that media type).
SinkOpener = Callable[[str], OriginalSink]


@dataclass(frozen=True)
class IngestedFile:
    size: int
    sha256: str
    detected_type: str
    declared_type: str | None
    filename: str | None


class FileSink:
    def __init__(
        self,
        spool: ByteTarget | None,
        limits: LimitSettings,
        sniffer: TypeSniffer,
        *,
        declared_type: str | None,
        filename: str | None,
        open_target: Callable[[str], ByteTarget] | None = None,
    ) -> None:
        assert (spool is None) != (open_target is None), "a target or an opener, not both"
        self._spool = spool
        self._open_target = open_target
        self._limits = limits
        self._sniffer = sniffer
        self.declared_type = declared_type
        self.filename = filename
        self.size = 0
        #: The file's SHA-256 (past its first MiB computed beside the caller: the reader keeps pace).
        self.hash = FileHash()
        self._head = bytearray()
        self.detected_type: str | None = None
        self._limit = limits.max_body_bytes

    def write(self, data: bytes | memoryview) -> None:
        if not data:
            return
        self.size += len(data)
        if self.size > self._limit:
            raise too_large(self._limit)
        self.hash.update(data)
        if self.detected_type is not None:
            assert self._spool is not None
            self._spool.write(data)
            return
        self._head += data
        if len(self._head) >= self._limits.sniff_bytes:
            self._decide()

    @property
    def target(self) -> ByteTarget | None:
        """Where the bytes go; None until the type is decided when the target is opened then."""
        return self._spool

    def finish(self) -> IngestedFile:
        """The body ended: decide the type of a short file, refuse an empty one."""
        if self.size == 0:
            raise ServiceError(ErrorCode.EMPTY_FILE, "the file is empty")
        if self.detected_type is None:
            self._decide()
        assert self.detected_type is not None
        return IngestedFile(
            size=self.size,
            sha256=self.hash.hexdigest(),
            detected_type=self.detected_type,
            declared_type=self.declared_type,
            filename=self.filename,
        )

    def _decide(self) -> None:
        detected = self._sniffer.detect_type(bytes(self._head[: self._limits.sniff_bytes]))
        check_type(detected, self.declared_type, self.filename, self._limits.allowed_types)
        self.detected_type = detected
        self._limit = min(self._limits.limit_for(detected), self._limits.max_body_bytes)
        if self.size > self._limit:
            raise too_large(self._limit)
        if self._open_target is not None:
            self._spool = self._open_target(detected)
        assert self._spool is not None
        self._spool.write(self._head)
        self._head = bytearray()
