import pytest

from upload_service.ingest.filenames import sanitize_filename


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("photo.png", "photo.png"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\scan.pdf", "scan.pdf"),
        ("a\x00b.png", "ab.png"),
        ("line\r\nbreak.jpg", "linebreak.jpg"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("zero\u200bwidth.gif", "zerowidth.gif"),
        ("  .hidden.png  ", "hidden.png"),
        ("..", None),
        (".", None),
        ("/", None),
        ("", None),
        (None, None),
        ("\x01\x02", None),
    ],
)
def test_sanitize_filename(raw: str | None, expected: str | None) -> None:
    assert sanitize_filename(raw) == expected


def test_long_names_are_cut_keeping_the_extension() -> None:
    result = sanitize_filename("x" * 1000 + ".jpeg", max_chars=255)
    assert result is not None
    assert len(result) == 255
    assert result.endswith(".jpeg")


def test_result_never_contains_separators_or_controls() -> None:
    hostile = "".join(chr(c) for c in range(0, 0x80)) + "\u2028\u2066.png"
    result = sanitize_filename(hostile)
    assert result is not None
    assert not any(ch in result for ch in "/\\\x00\r\n\u2028\u2066")
    assert all(ord(ch) >= 0x20 and ch != "\x7f" for ch in result)
