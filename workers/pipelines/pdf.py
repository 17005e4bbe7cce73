"""PDF pipeline: open (repairing if needed), check pages, remove active content, render page 1.

Steps: open_pdf → check_page_budget → remove_active_content → save_sanitized →
render_thumbnail → write_pdf_info.

What counts as active content, and the allow-lists that decide it, live in
``workers.pipelines.pdfactive``: every object reachable from the trailer is walked and only
actions, annotations and name trees known to be inert are kept. Saving writes only objects still
reachable, so the streams of removed scripts and embedded files do not reach ``sanitized.pdf``.
The thumbnail is rendered from the sanitized file, so the renderer never sees what was removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pikepdf
import pypdfium2 as pdfium
from PIL import Image

from workers.pipelines.base import (
    THUMBNAIL_WEBP_METHOD, ArtifactFile, PipelineResult, ProcessingError,
    run_pipeline, write_info,
)
from workers.pipelines.pdfactive import strip_active_content

_MAX_INFO_TEXT = 1000


@dataclass(frozen=True)
class PdfLimits:
    """Per-PDF limits and thumbnail settings."""

    max_pages: int = 1000
    thumbnail_size: int = 256
    webp_quality: int = 80

    def __post_init__(self) -> None:
        if self.max_pages < 1 or self.thumbnail_size < 1:
            raise ValueError("PDF limits must be positive")


@dataclass
class PdfJob:
    """The context passed from step to step."""

    src: Path
    out_dir: Path
    limits: PdfLimits
    pdf: pikepdf.Pdf | None = None
    pages: int = 0
    removed: set[str] = field(default_factory=set)
    artifacts: list[ArtifactFile] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def opened(self) -> pikepdf.Pdf:
        """The open document; a step that runs before open_pdf is a programming error."""
        if self.pdf is None:
            raise RuntimeError("open_pdf must run first")
        return self.pdf

    def close(self) -> None:
        if self.pdf is not None:
            self.pdf.close()


def open_pdf(job: PdfJob) -> PdfJob:
    """Open with qpdf, which rebuilds a damaged cross-reference table when it can.

    A file that needs a password fails; one encrypted with an empty user password (permission
    flags only) opens, and is saved without encryption, so ``encryption`` is reported removed.
    """
    try:
        job.pdf = pikepdf.open(job.src)
    except pikepdf.PasswordError as exc:
        raise ProcessingError("PDF_ENCRYPTED", internal=str(exc)) from exc
    except pikepdf.PdfError as exc:
        raise ProcessingError("PDF_CORRUPT", internal=str(exc)) from exc
    if job.pdf.is_encrypted:
        job.removed.add("encryption")
    return job


def check_page_budget(job: PdfJob) -> PdfJob:
    """Count pages before the heavy work; a PDF with none has nothing to show either."""
    try:
        job.pages = len(job.opened().pages)
    except pikepdf.PdfError as exc:
        raise ProcessingError("PDF_CORRUPT", internal=str(exc)) from exc
    if job.pages == 0:
        raise ProcessingError("PDF_CORRUPT", "The PDF has no pages.", internal="0 pages")
    if job.pages > job.limits.max_pages:
        raise ProcessingError("PDF_TOO_MANY_PAGES", internal=f"{job.pages} pages")
    return job


def remove_active_content(job: PdfJob) -> PdfJob:
    """Walk the whole document and drop every action, annotation and name tree that is not
    on the allow-lists (scripts, launches, embedded files, media, 3D, XFA, unsafe links)."""
    try:
        job.removed |= strip_active_content(job.opened())
    except pikepdf.PdfError as exc:
        raise ProcessingError("PDF_CORRUPT", internal=str(exc)) from exc
    return job


def save_sanitized(job: PdfJob) -> PdfJob:
    """Write ``sanitized.pdf``: unreachable objects are dropped, encryption removed, and the
    ``/ID`` derived from the content so that running the job twice gives the same bytes."""
    path = job.out_dir / "sanitized.pdf"
    job.artifacts.append(ArtifactFile("sanitized.pdf", path, "application/pdf"))
    try:
        job.opened().save(path, encryption=False, deterministic_id=True)
    except pikepdf.PdfError as exc:
        raise ProcessingError("PDF_CORRUPT", internal=str(exc)) from exc
    return job


def _render_first_page(path: Path, size: int) -> Image.Image:
    document = pdfium.PdfDocument(path)
    try:
        page = document[0]
        try:
            width, height = page.get_size()
            scale = size / max(width, height, 1.0)
            image: Image.Image = page.render(scale=scale).to_pil()
            return image
        finally:
            page.close()
    finally:
        document.close()


def render_thumbnail(job: PdfJob) -> PdfJob:
    """Render page 1 of the sanitized file with PDFium to ``thumb-<size>.webp``."""
    size = job.limits.thumbnail_size
    try:
        image = _render_first_page(job.out_dir / "sanitized.pdf", size)
    except pdfium.PdfiumError as exc:
        raise ProcessingError("PDF_CORRUPT", internal=str(exc)) from exc
    image.thumbnail((size, size))  # rounding in the renderer may overshoot by a pixel
    name = f"thumb-{size}.webp"
    path = job.out_dir / name
    job.artifacts.append(ArtifactFile(name, path, "image/webp"))
    image.convert("RGB").save(
        path, format="WEBP", quality=job.limits.webp_quality, method=THUMBNAIL_WEBP_METHOD
    )
    return job


def _docinfo_text(pdf: pikepdf.Pdf, key: str) -> str | None:
    """A document-information string, or None when absent, not a string or unreadable; capped
    in length, since it is the uploader's free text."""
    try:
        value = pdf.docinfo.get(key)
        return str(value)[:_MAX_INFO_TEXT] if isinstance(value, pikepdf.String) else None
    except (pikepdf.PdfError, TypeError, ValueError, UnicodeError):
        return None


def write_pdf_info(job: PdfJob) -> PdfJob:
    """info.json: page count, title, producer and the sorted list of what was removed."""
    pdf = job.opened()
    job.info = {
        "pages": job.pages,
        "title": _docinfo_text(pdf, "/Title"),
        "producer": _docinfo_text(pdf, "/Producer"),
        "removed": sorted(job.removed),
    }
    job.artifacts.append(write_info(job.out_dir, job.info))
    return job


PDF_STEPS = (
    open_pdf, check_page_budget, remove_active_content, save_sanitized, render_thumbnail,
    write_pdf_info,
)


def process_pdf(src: Path, out_dir: Path, limits: PdfLimits, deadline: float) -> PipelineResult:
    """Run the PDF steps on ``src``, writing artifacts into ``out_dir`` (created if needed).

    On any failure the files written so far are removed and the error propagates.
    """
    return run_pipeline(PDF_STEPS, PdfJob(src=src, out_dir=out_dir, limits=limits), deadline)
