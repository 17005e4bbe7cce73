"""Processing benchmark: images per second per core of our image pipeline vs libvips.

Inputs: generated 3000x2000 JPEGs (seeded, photo-like: smooth gradients and blobs plus fine
grain, quality 90), written to a temp dir. Figures, each over all the images:

- ours: ``workers.pipelines.image.process_image`` in this process, one image after the other
  (after one warm-up image). It decodes at full size, orients, strips metadata, re-encodes the
  sanitized JPEG (q85) and writes two WebP thumbnails (1024 and 256 px) from the full decode.
  "Per core" divides by the process's CPU time, so other load on the machine counts less.
- anchor ``vipsthumbnail``: one ``vipsthumbnail -s 256`` run over the same files, with
  ``VIPS_CONCURRENCY=1`` (one worker thread). It uses JPEG shrink-on-load: it never decodes at
  full size, which is most of why it is fast, and it writes one small file per image.
- anchor "libvips, same outputs": three ``vipsthumbnail`` runs writing the files ours writes: at
  the full size (``-s 3000x2000>``: no shrink, so a full decode, then JPEG q85, stripped) and
  WebP at 1024 and at 256 px. Each run decodes again (with shrink-on-load for the thumbnails).
- ours per step: the step times ``run_steps`` logs at DEBUG, collected during the timed run.
"""

from __future__ import annotations

import logging
import os
import random
import resource
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from PIL import Image

from bench.report import Row, Stopwatch
from workers.pipelines.base import THUMBNAIL_WEBP_METHOD
from workers.pipelines.image import ImageLimits, process_image

WIDTH, HEIGHT = 3000, 2000
_LIMITS = ImageLimits()
#: Our encoder settings, so libvips encodes the same way: WebP quality and effort, JPEG quality.
_WEBP = f".webp[Q={_LIMITS.webp_quality},effort={THUMBNAIL_WEBP_METHOD},strip]"
_JPEG = f".jpg[Q={_LIMITS.jpeg_quality},strip]"


def make_images(directory: Path, count: int) -> list[Path]:
    """Photo-like JPEGs (q90, about 2 MB each, like a phone photo of this size): smooth blobs at
    three scales and a rotated gradient, with a little colour grain on top. Seeded."""
    rng = random.Random(0)
    grain = Image.frombytes("RGB", (WIDTH, HEIGHT), rng.randbytes(WIDTH * HEIGHT * 3))

    def blobs(scale: int) -> Image.Image:
        size = (WIDTH // scale, HEIGHT // scale)
        small = Image.frombytes("L", size, rng.randbytes(size[0] * size[1]))
        return small.resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)

    paths = []
    for index in range(count):
        gradient = Image.linear_gradient("L").rotate(rng.randrange(360)).resize((WIDTH, HEIGHT))
        red, blue = Image.blend(gradient, blobs(40), 0.5), Image.blend(blobs(3), gradient, 0.5)
        picture = Image.blend(Image.merge("RGB", (red, blobs(8), blue)), grain, 0.06)
        path = directory / f"photo{index:02d}.jpg"
        picture.save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


class _StepTimes(logging.Handler):
    """Collects ``step NAME took MS ms`` records that ``run_steps`` logs at DEBUG."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.ms: dict[str, float] = defaultdict(float)

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "step %s took %.1f ms" and isinstance(record.args, tuple):
            name, ms = record.args
            self.ms[str(name)] += float(ms)


def run_ours(paths: list[Path], out_root: Path) -> tuple[Stopwatch, dict[str, float]]:
    process_image(paths[0], out_root / "warm-up", _LIMITS, time.monotonic() + 600)
    logger = logging.getLogger("workers.pipelines.base")
    handler, level, propagate = _StepTimes(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        with Stopwatch() as watch:
            for index, path in enumerate(paths):
                process_image(path, out_root / f"ours{index:02d}", _LIMITS, time.monotonic() + 600)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    return watch, dict(handler.ms)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_vips(commands: list[list[str]]) -> Stopwatch:
    """Run libvips commands one after the other; ``cpu`` is the children's CPU time."""
    env = {**os.environ, "VIPS_CONCURRENCY": "1"}
    watch = Stopwatch()
    cpu = _children_cpu()
    started = time.perf_counter()
    for command in commands:
        subprocess.run(command, check=True, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    watch.wall = time.perf_counter() - started
    watch.cpu = _children_cpu() - cpu
    return watch


def _thumbnail(paths: list[Path], out: Path, size: int | str, suffix: str = _WEBP) -> list[str]:
    """One ``vipsthumbnail`` run over every file (start-up paid once, ~50 ms)."""
    name = str(size).replace(">", "").replace("x", "-")
    return ["vipsthumbnail", "-s", str(size), "-o", f"{out}/%s-{name}{suffix}", *map(str, paths)]


def run(quick: bool) -> list[Row]:
    if shutil.which("vipsthumbnail") is None or shutil.which("vips") is None:
        return [Row("processing", "skipped: vipsthumbnail not found (apt-get install libvips-tools)", 0, "")]
    count = 4 if quick else 20
    root = Path(tempfile.mkdtemp(prefix="upload-bench-img-"))
    try:
        sources, outputs = root / "in", root / "out"
        sources.mkdir()
        outputs.mkdir()
        paths = make_images(sources, count)
        _run_vips([_thumbnail(paths[:1], outputs, 256)])  # warm the page cache and libvips' loader
        thumb = _run_vips([_thumbnail(paths, outputs, 256)])
        same_work = _run_vips([
            _thumbnail(paths, outputs, f"{WIDTH}x{HEIGHT}>", _JPEG),  # full decode, re-encode
            _thumbnail(paths, outputs, 1024),
            _thumbnail(paths, outputs, 256),
        ])
        ours, steps = run_ours(paths, outputs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return _rows(count, ours, thumb, same_work, steps)


def _rows(count: int, ours: Stopwatch, thumb: Stopwatch, same: Stopwatch, steps: dict[str, float]) -> list[Row]:
    name = f"{count} JPEGs {WIDTH}x{HEIGHT}"
    per_core = count / ours.cpu
    rows = [
        Row(name, "ours process_image, per core (CPU time)", per_core, "img/s", "vipsthumbnail 256 px",
            count / thumb.cpu, note="ours: full decode, sanitized JPEG, 1024+256 WebP"),
        Row(name, "ours process_image, per core (CPU time)", per_core, "img/s", "libvips, same outputs",
            count / same.cpu, note="vipsthumbnail: full-size JPEG q85 + 1024 + 256 WebP"),
        Row(name, "ours process_image, one process (wall)", count / ours.wall, "img/s",
            "vipsthumbnail 256 px (wall)", count / thumb.wall, note="VIPS_CONCURRENCY=1"),
    ]
    total_ms = sum(steps.values())
    if total_ms > 0:
        thumb_steps = ("open_image", "check_budgets", "decode_frames", "write_thumbnails")
        thumb_path = sum(steps.get(step, 0.0) for step in thumb_steps)
        rows.append(Row(name, "ours, thumbnail path only (open+decode+thumbnails)", count / (thumb_path / 1000),
                        "img/s", "vipsthumbnail 256 px", count / thumb.cpu,
                        note="from step times; 2 thumbnails, no shrink-on-load"))
        for step, ms in sorted(steps.items(), key=lambda item: -item[1]):
            if ms / total_ms >= 0.02:
                share = f"{ms / total_ms:.0%} of pipeline"
                rows.append(Row(name, f"ours step {step}", ms / count, "ms/img", note=share))
    return rows
