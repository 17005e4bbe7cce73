"""Behaviour of the PDF pipeline on generated inputs: what comes out, and what is refused."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pikepdf
import pytest
from PIL import Image

from tests import samples
from upload_service.media import kind_of
from workers.pipelines import run_pipeline_for
from workers.pipelines.base import PipelineResult, ProcessingError
from workers.pipelines.pdf import PdfLimits, process_pdf
from workers.pipelines.pdfactive import strip_active_content

Run = Callable[..., PipelineResult]

FORBIDDEN_KEYS = {
    "/JavaScript", "/JS", "/OpenAction", "/AA", "/Launch", "/EmbeddedFiles", "/EF",
    "/RichMedia", "/XFA", "/SubmitForm", "/ImportData", "/GoToR",
}
FORBIDDEN_ACTIONS = {"/JavaScript", "/Launch", "/SubmitForm", "/ImportData", "/GoToR",
                     "/RichMediaExecute"}


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """Write ``data`` to a file and run the pipeline on it with a generous deadline."""

    def _run(
        data: bytes, limits: PdfLimits | None = None, deadline: float | None = None
    ) -> PipelineResult:
        src = tmp_path / "upload.pdf"
        src.write_bytes(data)
        when = time.monotonic() + 60 if deadline is None else deadline
        return process_pdf(src, tmp_path / "out", limits or PdfLimits(), when)

    return _run


def _failure(run: Run, data: bytes, **limits: int) -> ProcessingError:
    with pytest.raises(ProcessingError) as caught:
        run(data, PdfLimits(**limits))
    return caught.value


def _by_name(result: PipelineResult) -> dict[str, Path]:
    return {artifact.name: artifact.path for artifact in result.artifacts}


_CONTAINERS = (pikepdf.Dictionary, pikepdf.Stream, pikepdf.Array)


def _nested(obj: Any) -> Iterator[Any]:
    """``obj`` and every dictionary, stream and array nested in it as a direct object
    (indirect ones are listed in ``pdf.objects`` on their own)."""
    stack = [obj]
    while stack:
        current = stack.pop()
        yield current
        values = current if isinstance(current, pikepdf.Array) else current.values()
        stack.extend(v for v in values if isinstance(v, _CONTAINERS) and not v.is_indirect)


def active_content(pdf: pikepdf.Pdf) -> list[str]:
    """Findings in every object the file holds (not only reachable ones), nested included.

    Written apart from the pipeline: it lists the file's objects instead of walking from the
    trailer, so it also sees anything a reachability walk might miss.
    """
    findings = []
    roots = [obj for obj in [pdf.trailer, *pdf.objects] if isinstance(obj, _CONTAINERS)]
    for root in roots:
        for obj in _nested(root):
            if isinstance(obj, pikepdf.Array):
                continue
            findings += [f"key {key}" for key in obj if key in FORBIDDEN_KEYS]
            if str(obj.get("/S", "")) in FORBIDDEN_ACTIONS:
                findings.append(f"action {obj.get('/S')}")
            if str(obj.get("/Subtype", "")) == "/FileAttachment":
                findings.append("annotation /FileAttachment")
            if str(obj.get("/Type", "")) == "/EmbeddedFile":
                findings.append("embedded file stream")
    return findings


# --- outputs ------------------------------------------------------------------------------------


def test_the_hostile_sample_really_carries_active_content(tmp_path: Path) -> None:
    path = tmp_path / "in.pdf"
    path.write_bytes(samples.pdf_with_active_content())

    with pikepdf.open(path) as pdf:
        found = set(active_content(pdf))

    assert {"key /OpenAction", "key /AA", "key /JavaScript", "key /EmbeddedFiles", "key /XFA",
            "key /EF", "action /Launch", "action /JavaScript", "annotation /FileAttachment",
            "embedded file stream"} <= found


def test_sanitized_pdf_has_no_active_content_anywhere(run: Run) -> None:
    result = run(samples.pdf_with_active_content())

    sanitized = _by_name(result)["sanitized.pdf"]
    with pikepdf.open(sanitized) as pdf:
        assert active_content(pdf) == []
        assert len(pdf.pages) == 1
    raw = sanitized.read_bytes()
    for marker in (samples.PDF_JS_MARKER.encode(), b"calc.exe", b"invoice.exe", b"MZ pretend"):
        assert marker not in raw


def test_what_was_removed_is_recorded(run: Run) -> None:
    result = run(samples.pdf_with_active_content())

    assert result.info["removed"] == [
        "action:JavaScript", "action:Launch", "annotation:FileAttachment", "form:XFA",
        "names:EmbeddedFiles", "names:JavaScript", "trigger:AA", "trigger:OpenAction",
    ]
    on_disk = json.loads(_by_name(result)["info.json"].read_text())
    assert on_disk == result.info
    assert (on_disk["pages"], on_disk["title"], on_disk["producer"]) == (
        1, "Sample document", "tests.samples")


def test_harmless_links_survive(run: Run) -> None:
    result = run(samples.pdf_with_active_content())

    with pikepdf.open(_by_name(result)["sanitized.pdf"]) as pdf:
        uris = [str(annot.A.URI) for annot in pdf.pages[0].Annots if "/A" in annot]
    assert uris == ["https://example.com/"]


def test_thumbnail_is_a_webp_of_page_one(run: Run) -> None:
    result = run(samples.pdf_bytes(pages=2))

    assert [a.name for a in result.artifacts] == ["sanitized.pdf", "thumb-256.webp", "info.json"]
    with Image.open(_by_name(result)["thumb-256.webp"]) as thumb:
        assert thumb.format == "WEBP"
        assert max(thumb.size) == 256 and thumb.size == (198, 256)
        # The sample's page shows a blue rectangle from (100, 100) to (400, 500) points.
        blue = thumb.convert("RGB").getpixel((80, 100))
        white = thumb.convert("RGB").getpixel((5, 5))
    assert blue[2] > 200 and blue[0] < 60  # type: ignore[index]
    assert min(white) > 240  # type: ignore[arg-type]


def test_repairable_pdf_is_processed_from_its_repaired_form(run: Run) -> None:
    result = run(samples.repairable_pdf_bytes())

    assert result.info["pages"] == 2
    with pikepdf.open(_by_name(result)["sanitized.pdf"]) as pdf:
        assert len(pdf.pages) == 2


def test_owner_password_only_pdf_is_processed_and_saved_unencrypted(run: Run) -> None:
    result = run(samples.owner_password_only_pdf_bytes())

    assert result.info["removed"] == ["encryption"]
    with pikepdf.open(_by_name(result)["sanitized.pdf"]) as pdf:
        assert not pdf.is_encrypted


def test_reference_cycles_and_shared_actions_are_handled(run: Run, tmp_path: Path) -> None:
    pdf = pikepdf.new()
    pdf.add_blank_page()
    loop = pdf.make_indirect(pikepdf.Dictionary(S=pikepdf.Name.URI, URI=pikepdf.String("x")))
    loop.Next = loop  # an action chain that points back at itself
    shared = pdf.make_indirect(pikepdf.Dictionary(S=pikepdf.Name.Launch))
    annots = [pikepdf.Dictionary(Subtype=pikepdf.Name.Link, A=shared, Rect=[0, 0, 1, 1]),
              pikepdf.Dictionary(Subtype=pikepdf.Name.Link, A=loop, Rect=[0, 0, 1, 1])]
    pdf.pages[0].obj.Annots = pikepdf.Array([pdf.make_indirect(a) for a in annots])
    pdf.Root.Outlines = pikepdf.Dictionary(A=shared)
    source = tmp_path / "cycle.pdf"
    pdf.save(source)

    result = run(source.read_bytes())

    assert result.info["removed"] == ["action:Launch", "action:URI(relative)"]
    with pikepdf.open(_by_name(result)["sanitized.pdf"]) as clean:
        assert active_content(clean) == []


def test_nesting_deeper_than_pythons_recursion_limit_is_walked() -> None:
    pdf = pikepdf.new()
    pdf.add_blank_page()
    node = pikepdf.Dictionary(A=pikepdf.Dictionary(S=pikepdf.Name.JavaScript, JS="x"))
    for _ in range(3000):
        node = pikepdf.Dictionary(Wrap=node)
    pdf.Root.Deep = node

    assert strip_active_content(pdf) == {"action:JavaScript"}
    assert active_content(pdf) == []


# --- refusals -----------------------------------------------------------------------------------


def test_password_protected_pdf_is_refused(run: Run) -> None:
    error = _failure(run, samples.encrypted_pdf_bytes())

    assert (error.code, error.permanent, error.step) == ("PDF_ENCRYPTED", True, "open_pdf")
    assert samples.PDF_USER_PASSWORD not in str(error)


def test_unrepairable_pdf_is_corrupt(tmp_path: Path, run: Run) -> None:
    data = samples.truncated_pdf_bytes()
    with pytest.raises(pikepdf.PdfError):  # the sample must be beyond qpdf's repair
        pikepdf.open(_write(tmp_path / "t.pdf", data))

    error = _failure(run, data)

    assert (error.code, error.permanent) == ("PDF_CORRUPT", True)
    assert str(tmp_path) not in error.message


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_page_budget(run: Run, tmp_path: Path) -> None:
    error = _failure(run, samples.pdf_bytes(pages=4), max_pages=3)

    assert (error.code, error.permanent, error.step) == (
        "PDF_TOO_MANY_PAGES", True, "check_page_budget")
    assert list((tmp_path / "out").iterdir()) == []


def test_page_budget_allows_exactly_the_limit(run: Run) -> None:
    assert run(samples.pdf_bytes(pages=3), PdfLimits(max_pages=3)).info["pages"] == 3


def test_passed_deadline_is_a_transient_timeout(run: Run) -> None:
    with pytest.raises(ProcessingError) as caught:
        run(samples.pdf_bytes(), deadline=time.monotonic() - 1)

    assert (caught.value.code, caught.value.permanent) == ("PROCESSING_TIMEOUT", False)


def test_dispatch_by_kind(tmp_path: Path) -> None:
    src = _write(tmp_path / "a.pdf", samples.pdf_bytes())

    result = run_pipeline_for(kind_of("application/pdf"), src, tmp_path / "out", time.monotonic() + 60)

    assert result.info["pages"] == 1
    with pytest.raises(ProcessingError) as caught:
        run_pipeline_for("svg", src, tmp_path / "out2", time.monotonic() + 60)
    assert caught.value.code == "UNSUPPORTED_MEDIA_TYPE"
