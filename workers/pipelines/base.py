"""What every pipeline shares: the error type, the result records and a tiny step runner.

A pipeline is a list of small named functions, each taking and returning one context dataclass
(imgproxy's shape). The runner checks the deadline between steps, so a slow file stops at the
next step boundary instead of running to the end; a single step that hangs is stopped by the
per-file child process's CPU and wall-clock limits (``workers/sandbox.py``), which also decides
whether a timeout was the file's own budget (permanent) or the job's deadline (transient). Errors carry a machine code, a public message (never a path) and whether
retrying could help, so the job can decide between "fail once" and "retry with backoff".
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

logger = logging.getLogger(__name__)

ContextT = TypeVar("ContextT")
Step = Callable[[ContextT], ContextT]

# libwebp effort for thumbnails, chosen by measurement (docs/benchmarks.md, "Processing: images"):
# 2 takes about half the time of the default 4 for files 3-5 % larger; 0 is faster still but its
# files are 8-20 % larger at the same SSIM. Sanitized copies keep the default.
THUMBNAIL_WEBP_METHOD = 2

_PUBLIC_MESSAGES: dict[str, str] = {
    "IMAGE_FORMAT_NOT_ALLOWED": "The image format is not allowed.",
    "IMAGE_CORRUPT": "The image is corrupt or truncated.",
    "IMAGE_TOO_MANY_PIXELS": "The image has more pixels than allowed.",
    "IMAGE_TOO_MANY_FRAMES": "The image has more frames than allowed.",
    "IMAGE_TOO_COMPLEX": "The image needs more decoding work than allowed (too many scans, chunks or blocks).",
    "PDF_ENCRYPTED": "The PDF is password-protected.",
    "PDF_CORRUPT": "The PDF is damaged beyond repair.",
    "PDF_TOO_MANY_PAGES": "The PDF has more pages than allowed.",
    "PROCESSING_TIMEOUT": "Processing took longer than allowed.",
    "PROCESSING_MEMORY_EXCEEDED": "Processing the file needed more memory than allowed.",
    "PROCESSING_CRASHED": "Processing the file crashed the decoder.",
    "UNSUPPORTED_MEDIA_TYPE": "No processing pipeline exists for this type of file.",
}


class ProcessingError(Exception):
    """A pipeline failure with a machine code (UPPER_SNAKE) and a public message.

    ``permanent`` says whether running the job again could succeed: a corrupt file never will,
    a timeout on a busy machine might. ``internal`` is for the log only (it may name paths or
    library messages). ``step`` is filled in by ``run_steps`` with the step that failed.
    """

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        permanent: bool = True,
        internal: str = "",
    ) -> None:
        self.code = code
        self.message = message or _PUBLIC_MESSAGES.get(code, "The file could not be processed.")
        self.permanent = permanent
        self.internal = internal
        self.step: str | None = None
        super().__init__(f"{code}: {self.message}")


@dataclass(frozen=True)
class ArtifactFile:
    """One file a pipeline produced in its output directory, under its artifact name."""

    name: str
    path: Path
    content_type: str


@dataclass(frozen=True)
class PipelineResult:
    """What a pipeline hands back: the files to store (in order) and the info it wrote."""

    artifacts: list[ArtifactFile]
    info: dict[str, Any]


def run_steps(steps: Sequence[Step[ContextT]], ctx: ContextT, deadline: float) -> ContextT:
    """Run ``steps`` in order on ``ctx``, checking ``time.monotonic()`` against ``deadline``
    before each one.

    A ``ProcessingError`` gets ``step`` set to the failing step (for a timeout: the step that
    was about to start). Any other exception is a bug or an environment fault, not a verdict on
    the file: it propagates unchanged apart from a note naming the step.
    """
    for step in steps:
        name = step.__name__
        if time.monotonic() > deadline:
            error = ProcessingError(
                "PROCESSING_TIMEOUT", permanent=False, internal=f"deadline passed before {name}"
            )
            error.step = name
            raise error
        started = time.perf_counter()
        try:
            ctx = step(ctx)
        except ProcessingError as exc:
            exc.step = exc.step or name
            raise
        except Exception as exc:
            exc.add_note(f"pipeline step: {name}")
            raise
        logger.debug("step %s took %.1f ms", name, (time.perf_counter() - started) * 1000)
    return ctx


def write_info(out_dir: Path, info: dict[str, Any]) -> ArtifactFile:
    """Write ``info.json`` (sorted keys, UTF-8) so equal inputs give byte-equal files."""
    path = out_dir / "info.json"
    path.write_text(json.dumps(info, sort_keys=True, ensure_ascii=False), encoding="utf-8")
    return ArtifactFile("info.json", path, "application/json")


def remove_artifacts(artifacts: Iterable[ArtifactFile]) -> None:
    """Delete files of a failed run, so the caller never uploads half a result."""
    for artifact in artifacts:
        artifact.path.unlink(missing_ok=True)


class PipelineJob(Protocol):
    """What ``run_pipeline`` needs of a pipeline's context."""

    out_dir: Path
    artifacts: list[ArtifactFile]
    info: dict[str, Any]

    def close(self) -> None: ...


JobT = TypeVar("JobT", bound=PipelineJob)


def run_pipeline(steps: Sequence[Step[JobT]], job: JobT, deadline: float) -> PipelineResult:
    """Run ``steps`` on ``job``; on any failure remove the files written so far and re-raise."""
    job.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        run_steps(steps, job, deadline)
    except BaseException:
        remove_artifacts(job.artifacts)
        raise
    finally:
        job.close()
    return PipelineResult(artifacts=list(job.artifacts), info=job.info)
