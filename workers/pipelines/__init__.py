"""Processing pipelines, one per media kind: pure code from a local file to local artifacts.

A pipeline reads ``src``, writes its artifacts into ``out_dir`` and returns a
``PipelineResult``; it never touches S3, Redis or a database, so the job around it stays thin
and the pipelines are testable with nothing but files. Failures are ``ProcessingError`` with a
code and a ``permanent`` flag.
"""

from __future__ import annotations

from pathlib import Path

from upload_service.media import IMAGE, PDF
from workers.pipelines.base import ArtifactFile, PipelineResult, ProcessingError
from workers.pipelines.image import ImageLimits, process_image
from workers.pipelines.pdf import PdfLimits, process_pdf

__all__ = [
    "ArtifactFile", "ImageLimits", "PdfLimits", "PipelineResult", "ProcessingError",
    "process_image", "process_pdf", "run_pipeline_for",
]

def run_pipeline_for(
    kind: str,
    src: Path,
    out_dir: Path,
    deadline: float,
    *,
    image_limits: ImageLimits | None = None,
    pdf_limits: PdfLimits | None = None,
) -> PipelineResult:
    """Run the pipeline for ``kind`` (``"image"`` or ``"pdf"``) with the given or default limits."""
    if kind == IMAGE:
        return process_image(src, out_dir, image_limits or ImageLimits(), deadline)
    if kind == PDF:
        return process_pdf(src, out_dir, pdf_limits or PdfLimits(), deadline)
    raise ProcessingError("UNSUPPORTED_MEDIA_TYPE", internal=f"no pipeline for kind {kind!r}")
