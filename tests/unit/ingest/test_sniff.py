import pytest

from tests import samples
from upload_service.errors import ErrorCode, ServiceError
from upload_service.ingest.sniff import TypeSniffer, check_type, extension_of, normalize_media_type
from upload_service.settings import DEFAULT_ALLOWED_TYPES

sniffer = TypeSniffer()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (samples.png_bytes, "image/png"),
        (samples.jpeg_bytes, "image/jpeg"),
        (samples.gif_bytes, "image/gif"),
        (samples.webp_bytes, "image/webp"),
        (samples.pdf_bytes, "application/pdf"),
    ],
)
def test_detects_allowed_types_from_the_first_bytes(make, expected: str) -> None:  # type: ignore[no-untyped-def]
    assert sniffer.detect_type(make()[:2048]) == expected


@pytest.mark.parametrize("make", [samples.html_bytes, samples.zip_bytes, samples.elf_bytes, samples.svg_bytes])
def test_hostile_types_are_not_allowed(make) -> None:  # type: ignore[no-untyped-def]
    detected = sniffer.detect_type(make()[:2048])
    with pytest.raises(ServiceError) as caught:
        check_type(detected, "application/octet-stream", None, DEFAULT_ALLOWED_TYPES)
    assert caught.value.code is ErrorCode.UNSUPPORTED_MEDIA_TYPE


def test_the_detected_type_is_judged_before_the_declared_one() -> None:
    with pytest.raises(ServiceError) as caught:
        check_type("text/html", "image/png", "x.png", DEFAULT_ALLOWED_TYPES)
    assert caught.value.code is ErrorCode.UNSUPPORTED_MEDIA_TYPE


@pytest.mark.parametrize("declared", ["image/jpeg", "image/jpg", "IMAGE/PJPEG", "image/jpeg; q=1", None, "", "application/octet-stream"])
def test_declared_aliases_and_unknown_agree(declared: str | None) -> None:
    check_type("image/jpeg", declared, "a.JPG", DEFAULT_ALLOWED_TYPES)


def test_declared_type_mismatch() -> None:
    with pytest.raises(ServiceError) as caught:
        check_type("image/jpeg", "image/png", None, DEFAULT_ALLOWED_TYPES)
    assert caught.value.code is ErrorCode.CONTENT_TYPE_MISMATCH


@pytest.mark.parametrize(("filename", "ok"), [("x.pdf", False), ("x.PNG", True), ("noext", True), (".png", True), ("x.png.exe", False)])
def test_extension_checks(filename: str, ok: bool) -> None:
    if ok:
        check_type("image/png", None, filename, DEFAULT_ALLOWED_TYPES)
        return
    with pytest.raises(ServiceError) as caught:
        check_type("image/png", None, filename, DEFAULT_ALLOWED_TYPES)
    assert caught.value.code is ErrorCode.EXTENSION_MISMATCH


def test_helpers() -> None:
    assert normalize_media_type(" Image/X-PNG ; a=b") == "image/png"
    assert extension_of("archive.tar.GZ") == "gz"
    assert extension_of(".bashrc") == ""
