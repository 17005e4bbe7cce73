"""Decoder bombs inside the pixel budget: refused from a byte scan before decoding, and a child
process under CPU, memory and wall-clock budgets as the backstop (docs/security.md).

Every case runs the real image pipeline in the sandboxed child the worker uses, with the
documented default budgets, and checks the child's peak RSS and CPU (from ``os.wait4``) against
them.
"""

from __future__ import annotations

import errno
import io
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from tests import bombs, samples
from upload_service.settings import ProcessingSettings
from workers.pipelines.base import PipelineResult, ProcessingError
from workers.pipelines.image import ImageLimits
from workers.pipelines.imagescan import ScanLimits, pillow_bomb_limit, scan_structure
from workers.sandbox import ResourceUsage, SandboxLimits, run_pipeline_sandboxed, run_sandboxed

DEFAULTS = ProcessingSettings()
BUDGET = SandboxLimits(
    cpu_seconds=DEFAULTS.max_cpu_seconds_per_file,
    memory_bytes=DEFAULTS.max_memory_bytes_per_file,
    wall_seconds=DEFAULTS.max_wall_seconds_per_file,
)
LIMITS = ImageLimits(
    max_pixels=DEFAULTS.max_pixels,
    max_frames=DEFAULTS.max_frames,
    max_jpeg_scans=DEFAULTS.max_jpeg_scans,
    max_segments=DEFAULTS.max_image_segments,
)
MiB = 1024 * 1024

Sandboxed = Callable[..., tuple[PipelineResult, ResourceUsage]]


@pytest.fixture
def sandboxed(tmp_path: Path) -> Sandboxed:
    """Run the image pipeline on ``data`` in the worker's sandboxed child."""

    def run(data: bytes, limits: ImageLimits = LIMITS, budget: SandboxLimits = BUDGET,
            deadline: float | None = None) -> tuple[PipelineResult, ResourceUsage]:
        src = tmp_path / "upload.bin"
        src.write_bytes(data)
        when = time.monotonic() + 60 if deadline is None else deadline
        return run_pipeline_sandboxed("image", src, tmp_path / "out", when, budget, image_limits=limits)

    return run


def refused(run: Sandboxed, data: bytes, **kwargs: object) -> ProcessingError:
    with pytest.raises(ProcessingError) as caught:
        run(data, **kwargs)
    return caught.value


def usage_of(error: ProcessingError) -> str:
    return error.internal.rsplit("; ", 1)[-1]


def assert_within_budget(usage: ResourceUsage, budget: SandboxLimits = BUDGET) -> None:
    assert usage.rss_growth_bytes <= budget.memory_bytes, usage.describe()
    assert usage.cpu_seconds <= budget.cpu_seconds, usage.describe()
    assert usage.wall_seconds <= budget.wall_seconds, usage.describe()


# --- defect 1: progressive-JPEG scan bombs ------------------------------------------------------


@pytest.mark.parametrize("extra_scans", [200, 2_000, 8_000])
def test_scan_bombs_of_growing_scan_count_are_refused_before_decoding(
    sandboxed: Sandboxed, extra_scans: int
) -> None:
    data = bombs.jpeg_scan_bomb(7000, extra_scans)  # 49 M pixels: inside the pixel budget
    assert len(data) < 1_000_000

    started = time.monotonic()
    error = refused(sandboxed, data)
    elapsed = time.monotonic() - started

    assert (error.code, error.permanent, error.step) == ("IMAGE_TOO_COMPLEX", True, "check_structure")
    assert f"more than {DEFAULTS.max_jpeg_scans} JPEG scans" in error.internal
    assert "scans" in error.message and "/" not in error.message
    assert elapsed < 5, elapsed  # decoding the 8,000-scan file takes about a minute of CPU


def test_scan_bomb_peak_rss_and_cpu_stay_far_inside_the_budget(tmp_path: Path) -> None:
    src = tmp_path / "bomb.jpg"
    src.write_bytes(bombs.jpeg_scan_bomb(7000, 8_000))

    with pytest.raises(ProcessingError) as caught:
        run_pipeline_sandboxed("image", src, tmp_path / "out", time.monotonic() + 60, BUDGET, image_limits=LIMITS)
    assert caught.value.code == "IMAGE_TOO_COMPLEX"
    # The peak RSS and CPU of the child are in the error's internal detail (and the log).
    detail = usage_of(caught.value)
    cpu = float(detail.split("cpu ")[1].split(" s")[0])
    growth = int(detail.split("(+")[1].split(" MiB")[0])
    assert cpu < 2.0 and growth < 64, detail
    assert cpu <= BUDGET.cpu_seconds and growth * MiB <= BUDGET.memory_bytes


def test_scans_up_to_the_budget_still_decode(sandboxed: Sandboxed) -> None:
    base_scans = 10  # Pillow's progressive encoder writes 10 scans for YCbCr
    data = bombs.jpeg_scan_bomb(600, DEFAULTS.max_jpeg_scans - base_scans)

    result, usage = sandboxed(data)

    assert result.info["format"] == "JPEG" and result.info["width"] == 600
    assert_within_budget(usage)
    error = refused(sandboxed, bombs.jpeg_scan_bomb(600, DEFAULTS.max_jpeg_scans - base_scans + 1))
    assert error.code == "IMAGE_TOO_COMPLEX"


def test_cpu_budget_stops_a_bomb_that_the_scan_budget_lets_through(sandboxed: Sandboxed) -> None:
    data = bombs.cpu_bomb()  # seconds of decoding, well past 1 s of CPU on any core
    budget = SandboxLimits(cpu_seconds=1, memory_bytes=BUDGET.memory_bytes, wall_seconds=30)
    lenient = ImageLimits(max_jpeg_scans=bombs.CPU_BOMB_SCANS_ALLOWED)

    started = time.monotonic()
    error = refused(sandboxed, data, limits=lenient, budget=budget)

    assert (error.code, error.permanent) == ("PROCESSING_TIMEOUT", True)
    assert "CPU budget of 1 s" in error.internal
    assert time.monotonic() - started < 20
    cpu = float(usage_of(error).split("cpu ")[1].split(" s")[0])
    assert cpu <= budget.cpu_seconds + 1.1  # SIGXCPU at the soft limit, SIGKILL one second later


def test_wall_clock_budget_is_the_files_own_and_permanent(sandboxed: Sandboxed) -> None:
    data = bombs.cpu_bomb()
    lenient = ImageLimits(max_jpeg_scans=bombs.CPU_BOMB_SCANS_ALLOWED)
    budget = SandboxLimits(cpu_seconds=60, memory_bytes=BUDGET.memory_bytes, wall_seconds=0.5)

    error = refused(sandboxed, data, limits=lenient, budget=budget)

    assert (error.code, error.permanent) == ("PROCESSING_TIMEOUT", True)


def test_a_job_deadline_before_the_files_budget_is_a_transient_timeout(sandboxed: Sandboxed) -> None:
    # The job's own deadline (time lost downloading, say) came first: running again may succeed.
    error = refused(sandboxed, samples.png_bytes(), deadline=time.monotonic() - 1)

    assert (error.code, error.permanent) == ("PROCESSING_TIMEOUT", False)


# --- defect 2: GIF frames outside the logical screen --------------------------------------------


@pytest.mark.parametrize("canvas", [2, 1000, 7000, 13000, 65535])
def test_gif_frames_outside_the_screen_are_refused_before_loading(
    sandboxed: Sandboxed, canvas: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bombs.gif_frame_outside_screen(canvas)
    assert len(data) < 100
    with monkeypatch.context() as unlimited:
        unlimited.setattr(Image, "MAX_IMAGE_PIXELS", None)
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (canvas, canvas)  # what Pillow would allocate on load

    error = refused(sandboxed, data)

    assert (error.code, error.permanent, error.step) == ("IMAGE_CORRUPT", True, "check_structure")
    assert "outside the 1x1 logical screen" in error.internal
    growth = int(usage_of(error).split("(+")[1].split(" MiB")[0])
    assert growth < 32, usage_of(error)  # 7000x7000 used to peak at 971 MiB, 13000x13000 at 1.5 GiB


def test_gif_frame_inside_its_screen_is_processed_within_budget(sandboxed: Sandboxed) -> None:
    result, usage = sandboxed(bombs.gif_frame_inside_screen(1000))

    assert (result.info["width"], result.info["height"]) == (1000, 1000)
    assert_within_budget(usage)


def test_gif_frames_are_counted_from_the_bytes(sandboxed: Sandboxed) -> None:
    error = refused(sandboxed, bombs.gif_with_frames(DEFAULTS.max_frames + 1))

    assert (error.code, error.step) == ("IMAGE_TOO_MANY_FRAMES", "check_structure")


def test_pillow_bomb_limit_is_the_budget_an_error_and_only_for_the_run() -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pillow_bomb_limit(1000):
        assert Image.MAX_IMAGE_PIXELS == 1000
        with pytest.raises(Image.DecompressionBombWarning):
            Image.open(io.BytesIO(samples.png_bytes(40, 30))).load()
    assert Image.MAX_IMAGE_PIXELS == before
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        Image.open(io.BytesIO(samples.png_bytes(40, 30))).load()  # no error outside the run


# --- the same class in every format: markers, chunks, blocks, frames ----------------------------


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: bombs.jpeg_with_comments(DEFAULTS.max_image_segments), "IMAGE_TOO_COMPLEX"),
        (lambda: bombs.png_with_chunks(DEFAULTS.max_image_segments), "IMAGE_TOO_COMPLEX"),
        (lambda: bombs.png_with_chunks(DEFAULTS.max_image_segments, b"IDAT"), "IMAGE_TOO_COMPLEX"),
        (lambda: bombs.gif_with_extensions(DEFAULTS.max_image_segments), "IMAGE_TOO_COMPLEX"),
        (lambda: bombs.jpeg_with_frame(0xC3), "IMAGE_FORMAT_NOT_ALLOWED"),  # lossless
        (lambda: bombs.jpeg_with_frame(0xC5), "IMAGE_FORMAT_NOT_ALLOWED"),  # hierarchical
        (lambda: bombs.jpeg_with_frame(0xC0, components=5), "IMAGE_CORRUPT"),
        (lambda: bombs.apng(2, claimed_frames=DEFAULTS.max_frames + 1), "IMAGE_TOO_MANY_FRAMES"),
        (lambda: bombs.apng(2, offset=(4, 4)), "IMAGE_CORRUPT"),
        (lambda: bombs.animated_webp(2, offset=(8, 8)), "IMAGE_CORRUPT"),
    ],
    ids=["jpeg-markers", "png-chunks", "png-idat-chunks", "gif-blocks", "jpeg-lossless",
         "jpeg-hierarchical", "jpeg-5-components", "apng-frames", "apng-frame-outside",
         "webp-frame-outside"],
)
def test_work_factors_of_every_format_are_refused_from_the_bytes(
    sandboxed: Sandboxed, make: Callable[[], bytes], code: str
) -> None:
    started = time.monotonic()
    error = refused(sandboxed, make())

    assert (error.code, error.permanent) == (code, True)
    assert error.step in ("open_image", "check_structure")
    assert time.monotonic() - started < 5


def test_webp_animation_frames_are_counted_from_the_bytes() -> None:
    data = bombs.animated_webp(12)
    limits = ScanLimits(max_pixels=10**6, max_frames=10, max_jpeg_scans=100, max_segments=1000)

    with pytest.raises(ProcessingError) as caught:
        scan_structure(data, "WEBP", limits)

    assert caught.value.code == "IMAGE_TOO_MANY_FRAMES"


@pytest.mark.parametrize(
    ("make", "family"),
    [
        (samples.jpeg_with_exif_gps_orientation6, "JPEG"), (lambda: bombs.progressive_jpeg(64), "JPEG"),
        (samples.noisy_jpeg_bytes, "JPEG"), (bombs.jpeg_with_junk_between_segments, "JPEG"),
        (samples.png_bytes, "PNG"), (lambda: bombs.apng(3), "PNG"),
        (samples.gif_bytes, "GIF"), (samples.animated_gif_bytes, "GIF"), (samples.webp_bytes, "WEBP"),
        (lambda: bombs.animated_webp(3), "WEBP"),
    ],
)
def test_ordinary_files_pass_the_scan(make: Callable[[], bytes], family: str) -> None:
    limits = ScanLimits(DEFAULTS.max_pixels, DEFAULTS.max_frames, DEFAULTS.max_jpeg_scans, DEFAULTS.max_image_segments)
    structure = scan_structure(make(), family, limits)
    assert structure.width > 0 and structure.height > 0


# --- the sandbox itself -------------------------------------------------------------------------


def test_a_jpeg_with_junk_between_segments_is_still_processed(sandboxed: Sandboxed) -> None:
    result, _ = sandboxed(bombs.jpeg_with_junk_between_segments())

    assert result.info["format"] == "JPEG"


def test_memory_budget_refuses_a_file_that_needs_more(sandboxed: Sandboxed) -> None:
    # A small file of 36 M pixels: its one full decode alone is ~100 MiB, over a 64 MiB budget
    # (the pipeline makes no other full-frame copy, so a budget above one decode could pass).
    data = samples.png_bytes(6000, 6000)
    budget = SandboxLimits(cpu_seconds=60, memory_bytes=64 * MiB, wall_seconds=30)

    error = refused(sandboxed, data, budget=budget)

    assert (error.code, error.permanent) == ("PROCESSING_MEMORY_EXCEEDED", True)
    growth = int(usage_of(error).split("(+")[1].split(" MiB")[0])
    # Stopped before the decode (~103 MiB) was done. (RSS may grow a little past the address-
    # space budget: pages the forked child already had mapped count once touched.)
    assert growth < 96, usage_of(error)


def test_the_child_cannot_use_the_workers_connections(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair()  # stands for the work-horse's DB or Redis connection
    try:
        def pipeline(deadline: float) -> PipelineResult:
            try:
                ours.send(b"FLUSHALL\r\n")
            except OSError as exc:  # the descriptor is /dev/null now, not a socket
                return PipelineResult(artifacts=[], info={"refused": exc.errno})
            return PipelineResult(artifacts=[], info={"refused": None})

        result, _ = run_sandboxed(pipeline, time.monotonic() + 10, BUDGET)

        assert result.info == {"refused": errno.ENOTSOCK}
        theirs.setblocking(False)
        with pytest.raises(BlockingIOError):
            theirs.recv(100)
        ours.send(b"PING")  # the parent's own connection still works
        assert theirs.recv(100) == b"PING"
    finally:
        ours.close()
        theirs.close()


def test_a_crashing_child_is_a_permanent_failure_and_leaves_no_process() -> None:
    def pipeline(deadline: float) -> PipelineResult:
        os.abort()

    before = _children()
    with pytest.raises(ProcessingError) as caught:
        run_sandboxed(pipeline, time.monotonic() + 10, BUDGET)

    assert (caught.value.code, caught.value.permanent) == ("PROCESSING_CRASHED", True)
    assert "SIGABRT" in caught.value.internal
    assert _children() == before  # reaped: no zombie, nothing running


def _children() -> set[str]:
    pid = os.getpid()
    return set(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def test_an_unexpected_error_in_the_child_reaches_the_parent_as_an_exception() -> None:
    def pipeline(deadline: float) -> PipelineResult:
        raise KeyError("a bug")

    with pytest.raises(RuntimeError, match="KeyError"):
        run_sandboxed(pipeline, time.monotonic() + 10, BUDGET)
