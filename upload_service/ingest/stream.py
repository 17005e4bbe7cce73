"""The one loop every file byte goes through: count, hash, sniff, write.

``FileSink.write`` is called with each chunk as it arrives. It holds back only the first
``sniff_bytes`` until the type is decided — so the type is judged before the rest of the body is
read — and cuts the upload off as soon as it passes its limit (the body cap until the type is
known, the type's own limit after). Memory per upload is bounded by the chunk size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from upload_service.errors import ErrorCode, ServiceError
from upload_service.ingest.limits import too_large
from upload_service.ingest.sniff import TypeSniffer, check_type
from upload_service.ingest.spool import SpoolFile
from upload_service.settings import LimitSettings


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
        spool: SpoolFile,
        limits: LimitSettings,
        sniffer: TypeSniffer,
        *,
        declared_type: str | None,
        filename: str | None,
    ) -> None:
        self._spool = spool
        self._limits = limits
        self._sniffer = sniffer
        self.declared_type = declared_type
        self.filename = filename
        self.size = 0
        self._hash = hashlib.sha256()
        self._head = bytearray()
        self.detected_type: str | None = None
        self._limit = limits.max_body_bytes

    def write(self, data: bytes | memoryview) -> None:
        if not data:
            return
        self.size += len(data)
        if self.size > self._limit:
            raise too_large(self._limit)
        self._hash.update(data)
        if self.detected_type is not None:
            self._spool.write(data)
            return
        self._head += data
        if len(self._head) >= self._limits.sniff_bytes:
            self._decide()

    def finish(self) -> IngestedFile:
        """The body ended: decide the type of a short file, refuse an empty one."""
        if self.size == 0:
            raise ServiceError(ErrorCode.EMPTY_FILE, "the file is empty")
        if self.detected_type is None:
            self._decide()
        assert self.detected_type is not None
        return IngestedFile(
            size=self.size,
            sha256=self._hash.hexdigest(),
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
        self._spool.write(self._head)
        self._head = bytearray()
