"""The ingest loop on its own: limits, type decision before the rest is written, cleanup."""

from pathlib import Path

import pytest

from tests import samples
from upload_service.errors import ErrorCode, ServiceError
from upload_service.ingest.sniff import TypeSniffer
from upload_service.ingest.spool import SpoolFile, remove_stale_parts
from upload_service.ingest.stream import FileSink
from upload_service.settings import LimitSettings

sniffer = TypeSniffer()


def feed(sink: FileSink, data: bytes, chunk: int = 1000) -> None:
    for start in range(0, len(data), chunk):
        sink.write(data[start : start + chunk])


def test_accepted_file_is_counted_hashed_and_committed(tmp_path: Path) -> None:
    import hashlib

    data = samples.png_bytes(300, 300)
    with SpoolFile(tmp_path) as spool:
        sink = FileSink(spool, LimitSettings(), sniffer, declared_type="image/png", filename="a.png")
        feed(sink, data)
        result = sink.finish()
        final = spool.commit("abc123")
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.detected_type == "image/png"
    assert final.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["abc123"]
    assert final.stat().st_mode & 0o777 == 0o600


def test_type_is_refused_before_more_than_the_sniff_prefix_is_written(tmp_path: Path) -> None:
    limits = LimitSettings(sniff_bytes=2048)
    with SpoolFile(tmp_path) as spool:
        sink = FileSink(spool, limits, sniffer, declared_type=None, filename=None)
        with pytest.raises(ServiceError) as caught:
            feed(sink, samples.html_bytes() + b" " * 10_000, chunk=512)
        assert caught.value.code is ErrorCode.UNSUPPORTED_MEDIA_TYPE
        assert spool.temp_path.stat().st_size == 0
        assert sink.size <= 2048 + 512
    assert list(tmp_path.iterdir()) == []


def test_per_type_limit_cuts_off_within_one_chunk(tmp_path: Path) -> None:
    limits = LimitSettings(max_image_bytes=50_000)
    data = samples.png_bytes() + b"\0" * 200_000
    with SpoolFile(tmp_path) as spool:
        sink = FileSink(spool, limits, sniffer, declared_type=None, filename=None)
        with pytest.raises(ServiceError) as caught:
            feed(sink, data, chunk=4096)
        assert caught.value.code is ErrorCode.FILE_TOO_LARGE
        assert sink.size <= 50_000 + 4096
    assert list(tmp_path.iterdir()) == []


def test_empty_file(tmp_path: Path) -> None:
    with SpoolFile(tmp_path) as spool:
        sink = FileSink(spool, LimitSettings(), sniffer, declared_type=None, filename=None)
        with pytest.raises(ServiceError) as caught:
            sink.finish()
    assert caught.value.code is ErrorCode.EMPTY_FILE
    assert list(tmp_path.iterdir()) == []


def test_short_file_is_decided_at_the_end(tmp_path: Path) -> None:
    data = b"%PDF-1.4\n%%EOF\n"
    with SpoolFile(tmp_path) as spool:
        sink = FileSink(spool, LimitSettings(), sniffer, declared_type="application/pdf", filename="t.pdf")
        sink.write(data)
        assert sink.finish().detected_type == "application/pdf"


def test_stale_parts_are_removed_at_start(tmp_path: Path) -> None:
    """Only parts nobody holds (their writer is gone); a live writer's part stays.
    (Two real processes sharing a spool: tests/integration/test_spool_siblings.py.)"""
    crashed = SpoolFile(tmp_path)
    crashed.write(b"half")
    crashed._file.close()  # its writer died: the lock is gone, the file is left behind
    live = SpoolFile(tmp_path)  # a sibling's upload in flight
    (tmp_path / "committed").write_bytes(b"x")
    assert remove_stale_parts(tmp_path) == 0  # both parts are younger than the grace period
    assert remove_stale_parts(tmp_path, min_age_seconds=0) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["committed", live.temp_path.name])
    live.discard()
