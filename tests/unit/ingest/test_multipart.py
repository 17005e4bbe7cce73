"""The streaming multipart reader against well-formed and abusive bodies."""

from pathlib import Path

import pytest

from tests import samples
from upload_service.errors import ErrorCode, ServiceError
from upload_service.ingest.multipart import MultipartReader, parse_boundary
from upload_service.ingest.sniff import TypeSniffer
from upload_service.ingest.spool import SpoolFile
from upload_service.ingest.stream import FileSink
from upload_service.settings import LimitSettings

BOUNDARY = "----testboundary7MA4YWxkTrZu0gW"
sniffer = TypeSniffer()


def part(name: str, data: bytes, filename: str | None = None, content_type: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    head = f"Content-Disposition: {disposition}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return f"--{BOUNDARY}\r\n{head}\r\n".encode() + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def run(data: bytes, tmp_path: Path, *, limits: LimitSettings | None = None, chunk: int = 777, boundary: str = BOUNDARY):  # type: ignore[no-untyped-def]
    limits = limits or LimitSettings()
    spool = SpoolFile(tmp_path)
    with spool:

        def open_file(filename: str | None, declared: str | None) -> FileSink:
            return FileSink(spool, limits, sniffer, declared_type=declared, filename=filename)

        reader = MultipartReader(f"multipart/form-data; boundary={boundary}", limits, open_file)
        for start in range(0, len(data), chunk):
            reader.feed(data[start : start + chunk])
            if reader.ended:
                break
        form = reader.finish()
        return form.file.finish(), form.fields, reader


def code_of(excinfo: pytest.ExceptionInfo[ServiceError]) -> ErrorCode:
    return excinfo.value.code


def test_file_and_metadata(tmp_path: Path) -> None:
    png = samples.png_bytes(200, 200)
    result, fields, _ = run(body(part("metadata", b'{"a": 1}'), part("file", png, "pic.png", "image/png")), tmp_path)
    assert result.size == len(png)
    assert result.filename == "pic.png"
    assert result.declared_type == "image/png"
    assert fields == {"metadata": b'{"a": 1}'}


def test_utf8_filename(tmp_path: Path) -> None:
    result, _, _ = run(body(part("file", samples.png_bytes(), "фото.png")), tmp_path)
    assert result.filename == "фото.png"


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=" + "a" * 71,
        'multipart/form-data; boundary="bad\x01char"',
        "multipart/mixed; boundary=abc",
    ],
)
def test_bad_boundaries(content_type: str) -> None:
    with pytest.raises(ServiceError) as caught:
        parse_boundary(content_type)
    assert code_of(caught) is ErrorCode.MALFORMED_MULTIPART


def test_truncated_body(tmp_path: Path) -> None:
    data = body(part("file", samples.png_bytes(), "a.png"))
    with pytest.raises(ServiceError) as caught:
        run(data[:-30], tmp_path)
    assert code_of(caught) is ErrorCode.MALFORMED_MULTIPART
    assert list(tmp_path.iterdir()) == []


def test_huge_preamble_fails_early(tmp_path: Path) -> None:
    data = b"\r\n" * 5_000_000 + body(part("file", samples.png_bytes(), "a.png"))
    limits = LimitSettings(max_preamble_bytes=16 * 1024)
    with pytest.raises(ServiceError) as caught:
        run(data, tmp_path, limits=limits, chunk=65536)
    assert code_of(caught) is ErrorCode.MALFORMED_MULTIPART


def test_garbage_preamble(tmp_path: Path) -> None:
    with pytest.raises(ServiceError) as caught:
        run(b"garbage" + body(part("file", samples.png_bytes(), "a.png")), tmp_path)
    assert code_of(caught) is ErrorCode.MALFORMED_MULTIPART


def test_oversized_part_header(tmp_path: Path) -> None:
    data = f"--{BOUNDARY}\r\nX-Long: {'a' * 100_000}\r\n\r\n".encode()
    with pytest.raises(ServiceError) as caught:
        run(data + b"x\r\n" + f"--{BOUNDARY}--\r\n".encode(), tmp_path)
    assert code_of(caught) is ErrorCode.MALFORMED_MULTIPART


def test_too_many_headers(tmp_path: Path) -> None:
    headers = "".join(f"X-H{i}: v\r\n" for i in range(100))
    data = f"--{BOUNDARY}\r\n{headers}\r\n".encode() + b"x\r\n" + f"--{BOUNDARY}--\r\n".encode()
    with pytest.raises(ServiceError) as caught:
        run(data, tmp_path)
    assert code_of(caught) is ErrorCode.MALFORMED_MULTIPART


def test_thousands_of_parts(tmp_path: Path) -> None:
    data = body(*[part(f"f{i}", b"x") for i in range(5000)])
    with pytest.raises(ServiceError) as caught:
        _, _, reader = run(data, tmp_path, chunk=65536)
    assert code_of(caught) is ErrorCode.MALFORMED_MULTIPART


def test_two_files(tmp_path: Path) -> None:
    png = samples.png_bytes()
    with pytest.raises(ServiceError) as caught:
        run(body(part("file", png, "a.png"), part("file", png, "b.png")), tmp_path)
    assert code_of(caught) is ErrorCode.TOO_MANY_FILES


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ServiceError) as caught:
        run(body(part("metadata", b"{}")), tmp_path)
    assert code_of(caught) is ErrorCode.MISSING_FILE


def test_oversized_text_field(tmp_path: Path) -> None:
    with pytest.raises(ServiceError) as caught:
        run(body(part("metadata", b"x" * 200_000), part("file", samples.png_bytes(), "a.png")), tmp_path)
    assert code_of(caught) is ErrorCode.MALFORMED_MULTIPART


def test_part_without_disposition(tmp_path: Path) -> None:
    data = f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()
    with pytest.raises(ServiceError) as caught:
        run(data, tmp_path)
    assert code_of(caught) is ErrorCode.MALFORMED_MULTIPART


def test_declared_part_type_is_checked_before_the_rest(tmp_path: Path) -> None:
    jpeg = samples.jpeg_bytes(400, 400)
    with pytest.raises(ServiceError) as caught:
        run(body(part("file", jpeg, "a.jpg", "image/png")), tmp_path)
    assert code_of(caught) is ErrorCode.CONTENT_TYPE_MISMATCH
