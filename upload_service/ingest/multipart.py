"""A streaming multipart/form-data reader with hard bounds, on python-multipart's parser.

It feeds the one file part (named ``file``) into a ``FileSink`` chunk by chunk and keeps small
text fields (``metadata``) in memory up to ``max_field_bytes``. Everything abusive fails fast
with ``MALFORMED_MULTIPART`` in bounded memory: a missing, invalid or over-long boundary, a long
preamble, oversized or too many part headers, too many parts, a truncated body.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from upload_service.errors import ErrorCode, ServiceError
from upload_service.ingest.stream import FileSink
from upload_service.settings import LimitSettings

#: RFC 2046 boundary: 1 to 70 characters from bchars, not ending in a space.
_BOUNDARY = re.compile(rb"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
_MAX_HEADERS_PER_PART = 8

FILE_FIELD = "file"


def malformed(reason: str) -> ServiceError:
    return ServiceError(ErrorCode.MALFORMED_MULTIPART, f"malformed multipart body: {reason}")


def parse_boundary(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type, validated."""
    media_type, options = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise malformed("not multipart/form-data")
    boundary = options.get(b"boundary")
    if not boundary:
        raise malformed("no boundary")
    if not _BOUNDARY.fullmatch(boundary):
        raise malformed("invalid boundary")
    return boundary


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    header_name: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    name: str | None = None
    sink: FileSink | None = None
    value: bytearray | None = None


@dataclass
class FormResult:
    file: FileSink
    fields: dict[str, bytes]


class MultipartReader:
    """Feed body chunks with ``feed``; call ``finish`` when the body has ended.

    ``open_file(filename, declared_type)`` is called once, when the file part's headers are
    complete, and returns the sink its bytes go to.
    """

    def __init__(
        self,
        content_type: str,
        limits: LimitSettings,
        open_file: Callable[[str | None, str | None], FileSink],
    ) -> None:
        self._limits = limits
        self._open_file = open_file
        self._parts = 0
        self._part: _Part | None = None
        self._file: FileSink | None = None
        self._fields: dict[str, bytes] = {}
        self._ended = False
        self._fed = 0
        self._parser = MultipartParser(
            parse_boundary(content_type),
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
            max_header_count=_MAX_HEADERS_PER_PART,
            max_header_size=limits.max_part_header_bytes,
        )

    @property
    def ended(self) -> bool:
        return self._ended

    def feed(self, chunk: bytes) -> None:
        if self._ended:
            return  # the epilogue after the closing boundary is ignored
        self._fed += len(chunk)
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise malformed("unexpected bytes in the body") from exc
        if self._parts == 0 and self._fed > self._limits.max_preamble_bytes + 256:
            raise malformed("no part begins within the allowed preamble")

    def finish(self) -> FormResult:
        if not self._ended or self._parser.state != MultipartState.END:
            raise malformed("the body ended before the closing boundary")
        if self._file is None:
            raise ServiceError(ErrorCode.MISSING_FILE, f"no file part named '{FILE_FIELD}'")
        return FormResult(file=self._file, fields=self._fields)

    # --- parser callbacks -------------------------------------------------------------------

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self._limits.max_multipart_parts:
            raise malformed(f"more than {self._limits.max_multipart_parts} parts")
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        assert self._part is not None
        self._part.header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        assert self._part is not None
        self._part.header_value += data[start:end]

    def _on_header_end(self) -> None:
        part = self._part
        assert part is not None
        name = part.header_name.decode("latin-1").strip().lower()
        # latin-1 keeps the raw bytes; the filename is decoded as UTF-8 once it is parsed out.
        part.headers[name] = part.header_value.decode("latin-1").strip()
        part.header_name.clear()
        part.header_value.clear()

    def _on_headers_finished(self) -> None:
        part = self._part
        assert part is not None
        disposition = part.headers.get("content-disposition")
        if disposition is None:
            raise malformed("a part has no Content-Disposition")
        kind, options = parse_options_header(disposition)
        if kind != b"form-data" or b"name" not in options:
            raise malformed("a part is not a named form-data field")
        part.name = options[b"name"].decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is not None or part.name == FILE_FIELD:
            if self._file is not None:
                raise ServiceError(ErrorCode.TOO_MANY_FILES, "exactly one file may be uploaded per request")
            if part.name != FILE_FIELD:
                # Uppy's bundle mode sends ``files[]``: one file per request here, named ``file``.
                raise ServiceError(
                    ErrorCode.MISSING_FILE,
                    f"the file part must be named '{FILE_FIELD}', not '{part.name[:64]}': one file per request"
                    " (Uppy XHRUpload: bundle: false, fieldName: 'file')",
                )
            decoded = filename.decode("utf-8", "replace") if filename is not None else None
            part.sink = self._file = self._open_file(decoded, part.headers.get("content-type"))
        else:
            part.value = bytearray()

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        assert part is not None
        if part.sink is not None:
            part.sink.write(memoryview(data)[start:end])
            return
        assert part.value is not None
        part.value += data[start:end]
        if len(part.value) > self._limits.max_field_bytes:
            raise malformed(f"the field '{part.name}' exceeds {self._limits.max_field_bytes} bytes")

    def _on_part_end(self) -> None:
        part = self._part
        if part is not None and part.value is not None and part.name is not None:
            if part.name in self._fields:
                raise malformed(f"the field '{part.name}' is repeated")
            self._fields[part.name] = bytes(part.value)
        self._part = None

    def _on_end(self) -> None:
        self._ended = True
