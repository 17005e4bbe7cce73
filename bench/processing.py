"""Processing benchmark: images per second per core of our image pipeline vs libvips.

Inputs: generated 3000x2000 JPEGs (seeded, photo-like: smooth gradients and blobs plus fine
grain, quality 90), written to a temp dir. Three rounds (also with ``--quick``, over fewer
images); in each, ours and both libvips anchors run one after the other, in an order that
rotates from round to round, so load from elsewhere on the machine falls on all of them alike.
Every figure is the median of the rounds, with the min-max beside it. Figures, each over all
the images:

- ours: ``workers.pipelines.image.process_image`` in this process, one image after the other
  (after one warm-up image). It decodes once at full size, orients, strips metadata, re-encodes
  the sanitized JPEG (q85) and makes two WebP thumbnails (1024 and 256 px) from that decode.
  "Per core" divides by the process's CPU time, so other load on the machine counts less.
- anchor ``vipsthumbnail``: one ``vipsthumbnail -s 256`` run over the same files, with
  ``VIPS_CONCURRENCY=1`` (one worker thread). It uses JPEG shrink-on-load: it never decodes at
  full size, which is most of why it is fast, and it writes one small file per image.
- anchor "libvips, same outputs": three ``vipsthumbnail`` runs writing the files ours writes: at
  the full size (``-s 3000x2000>``: no shrink, so a full decode, then JPEG q85, stripped) and
  WebP at 1024 and at 256 px, with our WebP quality and effort. Each run decodes again (with
  shrink-on-load for the thumbnails). After the first round the bench checks that both sides
  wrote the same files: same formats and sizes, no metadata left on either side.
- ours per step: CPU time of each pipeline step, from one extra pass over the images.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import ExifTags, Image

from bench.report import Row, Stopwatch, median
from workers.pipelines.base import THUMBNAIL_WEBP_METHOD
from workers.pipelines.image import IMAGE_STEPS, ImageJob, ImageLimits, process_image
from workers.pipelines.imagescan import pillow_bomb_limit

WIDTH, HEIGHT = 3000, 2000
ROUNDS = 3
_LIMITS = ImageLimits()
#: Our encoder settings, so libvips encodes the same way: WebP quality and effort, JPEG quality.
_WEBP = f".webp[Q={_LIMITS.webp_quality},effort={THUMBNAIL_WEBP_METHOD},strip]"
_JPEG = f".jpg[Q={_LIMITS.jpeg_quality},strip]"
_CAMERA = "BenchCam"  # the camera name in the inputs' EXIF; no output may carry it
_FULL = f"{WIDTH}x{HEIGHT}>"  # vipsthumbnail's "shrink only if larger": the full-size copy


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
        picture.save(path, "JPEG", quality=90, exif=_camera_exif())
        paths.append(path)
    return paths


def _camera_exif() -> Image.Exif:
    """What a phone writes (camera, time, upright orientation, GPS), for both sides to strip."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make], exif[ExifTags.Base.Model] = _CAMERA, "Phone 1"
    exif[ExifTags.Base.DateTime], exif[ExifTags.Base.Orientation] = "2026:11:25 10:00:00", 1
    exif[ExifTags.IFD.GPSInfo] = {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (48.0, 51.0, 24.0)}
    return exif


def run_ours(paths: list[Path], out_root: Path) -> Stopwatch:
    with Stopwatch() as watch:
        for index, path in enumerate(paths):
            process_image(path, out_root / f"ours{index:02d}", _LIMITS, time.monotonic() + 600)
    return watch


def step_cpu_ms(paths: list[Path], out_root: Path) -> dict[str, float]:
    """CPU milliseconds per step, summed over ``paths``: the steps of ``process_image`` run
    one by one under the same bomb limit, each timed with the process's CPU clock."""
    totals = dict.fromkeys((step.__name__ for step in IMAGE_STEPS), 0.0)
    for index, path in enumerate(paths):
        job = ImageJob(src=path, out_dir=out_root / f"steps{index:02d}", limits=_LIMITS)
        job.out_dir.mkdir(parents=True)
        with pillow_bomb_limit(_LIMITS.max_pixels):
            try:
                for step in IMAGE_STEPS:
                    started = time.process_time()
                    job = step(job)
                    totals[step.__name__] += (time.process_time() - started) * 1000
            finally:
                job.close()
    return totals


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


def _vips_name(size: int | str) -> str:
    return str(size).replace(">", "").replace("x", "-")


def _thumbnail(paths: list[Path], out: Path, size: int | str, suffix: str = _WEBP) -> list[str]:
    """One ``vipsthumbnail`` run over every file (start-up paid once, ~30-50 ms)."""
    return ["vipsthumbnail", "-s", str(size), "-o", f"{out}/%s-{_vips_name(size)}{suffix}", *map(str, paths)]


def _same_outputs(paths: list[Path], out: Path) -> list[list[str]]:
    return [
        _thumbnail(paths, out, _FULL, _JPEG),  # full decode, re-encode
        *(_thumbnail(paths, out, size) for size in sorted(_LIMITS.thumbnail_sizes, reverse=True)),
    ]


def _described(path: Path) -> tuple[str | None, tuple[int, int], list[str]]:
    """Format, size and the metadata blocks a written file carries."""
    with Image.open(path) as image:
        blocks = sorted(key for key in ("exif", "xmp", "icc_profile", "comment") if image.info.get(key))
        return image.format, image.size, blocks


def check_same_outputs(paths: list[Path], ours: Path, vips: Path) -> str:
    """Both sides wrote the same files for every image (formats and sizes equal), ours with no
    metadata at all; raises ``RuntimeError`` otherwise (a ratio over unequal work would mean
    nothing). Returns what was checked, naming the libvips outputs that kept the inputs' EXIF:
    libvips 8.14's WebP writer copies it even with ``strip`` (writing it is no saving for it)."""
    pairs = [("sanitized.jpg", f"-{_vips_name(_FULL)}.jpg")]
    pairs += [(f"thumb-{size}.webp", f"-{size}.webp") for size in sorted(_LIMITS.thumbnail_sizes, reverse=True)]
    seen: list[str] = []
    vips_kept: set[str] = set()
    for index, path in enumerate(paths):
        for our_name, vips_suffix in pairs:
            mine_path, theirs_path = ours / f"ours{index:02d}" / our_name, vips / f"{path.stem}{vips_suffix}"
            (fmt, size, blocks), (vips_fmt, vips_size, _) = _described(mine_path), _described(theirs_path)
            if (fmt, size) != (vips_fmt, vips_size) or blocks or _CAMERA.encode() in mine_path.read_bytes():
                raise RuntimeError(f"{path.name}: ours wrote {our_name} as {fmt} {size} with {blocks}, "
                                   f"libvips as {vips_fmt} {vips_size}")
            if _CAMERA.encode() in theirs_path.read_bytes():
                vips_kept.add(vips_suffix.lstrip("-"))
            if index == 0:
                seen.append(f"{fmt} {size[0]}x{size[1]}")
    kept = f"; libvips kept the inputs' EXIF in its {', '.join(sorted(vips_kept))}" if vips_kept else ""
    return "checked: same files (" + ", ".join(seen) + "), ours without metadata" + kept


@dataclass
class _Rounds:
    """CPU and wall time of every round, per side."""

    cpu: dict[str, list[float]] = field(default_factory=dict)
    wall: dict[str, list[float]] = field(default_factory=dict)

    def add(self, side: str, watch: Stopwatch) -> None:
        self.cpu.setdefault(side, []).append(watch.cpu)
        self.wall.setdefault(side, []).append(watch.wall)


def run(quick: bool) -> list[Row]:
    if shutil.which("vipsthumbnail") is None:
        return [Row("processing", "skipped: vipsthumbnail not found (apt-get install libvips-tools)", 0, "")]
    count = 4 if quick else 20
    root = Path(tempfile.mkdtemp(prefix="upload-bench-img-"))
    rounds = _Rounds()
    try:
        sources = root / "in"
        sources.mkdir()
        paths = make_images(sources, count)
        warm = root / "warm-up"
        warm.mkdir()
        _run_vips([_thumbnail(paths[:1], warm, 256)])  # the page cache and libvips' loader
        process_image(paths[0], warm / "ours", _LIMITS, time.monotonic() + 600)
        checked = ""
        for number in range(ROUNDS):
            out = root / f"round{number}"
            out.mkdir()
            sides: list[tuple[str, Callable[[Path], Stopwatch]]] = [
                ("ours", lambda into: run_ours(paths, into)),
                ("thumb", lambda into: _run_vips([_thumbnail(paths, into, 256)])),
                ("same", lambda into: _run_vips(_same_outputs(paths, into))),
            ]
            for side, measure in sides[number % 3:] + sides[: number % 3]:
                rounds.add(side, measure(out))
            if not checked:
                checked = check_same_outputs(paths, out, out)
            shutil.rmtree(out)
        steps = step_cpu_ms(paths, root / "steps")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return _rows(count, rounds, steps, checked)


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def _rows(count: int, rounds: _Rounds, steps: dict[str, float], checked: str) -> list[Row]:
    name = f"{count} JPEGs {WIDTH}x{HEIGHT}"
    rate = {side: [count / cpu for cpu in cpus] for side, cpus in rounds.cpu.items()}
    walls = {side: [count / wall for wall in values] for side, values in rounds.wall.items()}

    def ratios(anchor: str) -> str:
        per_round = [ours / theirs for ours, theirs in zip(rate["ours"], rate[anchor], strict=True)]
        return f"ratio per round {_spread(per_round)}"

    ours_spread, n = _spread(rate["ours"]), len(rate["ours"])
    rows = [
        Row(name, "ours process_image, per core (CPU time)", median(rate["ours"]), "img/s",
            "libvips, same outputs", median(rate["same"]),
            note=f"{n} rounds; ours {ours_spread}, libvips {_spread(rate['same'])}; {ratios('same')}; {checked}"),
        Row(name, "ours process_image, per core (CPU time)", median(rate["ours"]), "img/s",
            "vipsthumbnail 256 px", median(rate["thumb"]),
            note=f"ours {ours_spread}, vipsthumbnail {_spread(rate['thumb'])}; {ratios('thumb')}; "
                 "it writes one 256 px file from a shrink-on-load decode"),
        Row(name, "ours process_image, one process (wall)", median(walls["ours"]), "img/s",
            "libvips, same outputs (wall)", median(walls["same"]), note="VIPS_CONCURRENCY=1"),
    ]
    total_ms = sum(steps.values())
    thumb_steps = ("check_structure", "open_image", "check_budgets", "decode_frames", "write_thumbnails")
    thumb_ms = sum(steps.get(step, 0.0) for step in thumb_steps)
    if thumb_ms > 0:
        rows.append(Row(name, "ours, thumbnail path only (scan+open+decode+thumbnails)", count / (thumb_ms / 1000),
                        "img/s", "vipsthumbnail 256 px", median(rate["thumb"]),
                        note="from step CPU times; 2 thumbnails from a full decode"))
    for step, ms in sorted(steps.items(), key=lambda item: -item[1]):
        if total_ms > 0 and ms / total_ms >= 0.02:
            rows.append(Row(name, f"ours step {step} (CPU)", ms / count, "ms/img", note=f"{ms / total_ms:.0%} of pipeline"))
    return rows
