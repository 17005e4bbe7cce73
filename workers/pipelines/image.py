"""Image pipeline: decode under limits, orient, strip metadata, re-encode, thumbnail.

Steps: check_structure → open_image → check_budgets → decode_frames → inventory_metadata →
orient_frames → strip_metadata → write_sanitized → write_thumbnails → write_image_info.

Security limits are checked before any pixel is decoded: the decoder work factors (JPEG scans,
GIF frames outside the logical screen, chunk and marker counts) by a byte scan of the file
(``imagescan.py``), pixels and frames on the header. Pillow's own bomb limit is set to the pixel
budget for the run, its warning raised as an error. Only four decoders may run (never EPS/PS,
which shell out to Ghostscript); truncated data is an error, never padded.

The file is decoded once, at full size: ``sanitized.*`` needs every pixel, so JPEG draft mode
(libjpeg's DCT scaling to 1/2, 1/4 or 1/8) is not used, and a second, draft-mode decode just for
the thumbnails would parse the untrusted file twice. The thumbnails come from that one decoded
frame instead: the largest is box-reduced by an integer factor and finished with LANCZOS, each
smaller one is made from the previous one (see ``write_thumbnails``). No step copies the full
frame unless it changes its pixels (orientation, colour profile, mode conversion).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from PIL import Image, ImageFile, UnidentifiedImageError

from workers.pipelines.base import (
    THUMBNAIL_WEBP_METHOD, ArtifactFile, PipelineResult, ProcessingError,
    run_pipeline, write_info,
)
from workers.pipelines.imagemeta import (
    DECODE_ERRORS, XMP_KEYS, metadata_in, pixels_only, to_srgb, upright_transform,
)
from workers.pipelines.imagescan import ScanLimits, family_of, pillow_bomb_limit, scan_structure

ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")
_SANITIZED = {  # format family -> (artifact name, content type)
    "JPEG": ("sanitized.jpg", "image/jpeg"), "PNG": ("sanitized.png", "image/png"),
    "GIF": ("sanitized.gif", "image/gif"), "WEBP": ("sanitized.webp", "image/webp"),
}


@dataclass(frozen=True)
class ImageLimits:
    """Per-image limits and output settings.

    ``max_animation_pixels`` caps width x height summed over the frames of an animation: every
    frame is held decoded (about 4 bytes a pixel) while it is re-encoded, so 200 frames of a
    50-megapixel canvas must not pass just because each frame does. Still images answer to
    ``max_pixels`` alone. ``max_jpeg_scans`` and ``max_segments`` bound the decoder's passes and
    the parser's loops (see ``imagescan.py``).
    """

    max_pixels: int = 50_000_000
    max_frames: int = 200
    max_animation_pixels: int = 100_000_000
    max_jpeg_scans: int = 100
    max_segments: int = 65_536
    thumbnail_sizes: tuple[int, ...] = (256, 1024)
    jpeg_quality: int = 85
    webp_quality: int = 80

    def __post_init__(self) -> None:
        budgets = (self.max_pixels, self.max_frames, self.max_animation_pixels,
                   self.max_jpeg_scans, self.max_segments)
        if min(budgets) < 1:
            raise ValueError("image limits must be positive")
        if any(size < 1 for size in self.thumbnail_sizes):
            raise ValueError("thumbnail sizes must be positive")
        if not (1 <= self.jpeg_quality <= 100 and 1 <= self.webp_quality <= 100):
            raise ValueError("qualities must be within 1..100")


@dataclass
class ImageJob:
    """The context passed from step to step."""

    src: Path
    out_dir: Path
    limits: ImageLimits
    file: IO[bytes] | None = None
    source: ImageFile.ImageFile | None = None
    family: str = ""
    frames: list[Image.Image] = field(default_factory=list)
    durations: list[int] = field(default_factory=list)
    loop: int | None = None
    found_metadata: set[str] = field(default_factory=set)
    artifacts: list[ArtifactFile] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def opened(self) -> ImageFile.ImageFile:
        """The opened source; a step that runs before open_image is a programming error."""
        if self.source is None:
            raise RuntimeError("open_image must run first")
        return self.source

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
        if self.file is not None:
            self.file.close()


@contextlib.contextmanager
def _decoding() -> Iterator[None]:
    """Turn what Pillow raises on hostile input into our codes (bombs, then corrupt data)."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning arrives as an exception when warnings are turned into errors.
        raise ProcessingError("IMAGE_TOO_MANY_PIXELS", internal=str(exc)) from exc
    except DECODE_ERRORS as exc:
        raise ProcessingError("IMAGE_CORRUPT", internal=repr(exc)) from exc


def check_structure(job: ImageJob) -> ImageJob:
    """Refuse decoder work factors from a byte scan of the file, before Pillow parses any of it.

    A file of no allowed format is left to open_image, which refuses it.
    """
    limits = job.limits
    data = job.src.read_bytes()
    family = family_of(data[:16])
    if family is not None:
        scan_limits = ScanLimits(limits.max_pixels, limits.max_frames, limits.max_jpeg_scans, limits.max_segments)
        scan_structure(data, family, scan_limits)
    return job


def open_image(job: ImageJob) -> ImageJob:
    """Identify the file with the four allowed decoders only (header parse, no pixels).

    A file that starts like an allowed format but that no decoder accepts is corrupt, not of
    a disallowed format.
    """
    job.file = job.src.open("rb")
    with _decoding():
        try:
            job.source = Image.open(job.file, formats=list(ALLOWED_FORMATS))
        except UnidentifiedImageError as exc:
            job.file.seek(0)
            corrupt = family_of(job.file.read(16)) is not None
            code = "IMAGE_CORRUPT" if corrupt else "IMAGE_FORMAT_NOT_ALLOWED"
            raise ProcessingError(code, internal=str(exc)) from exc
    # Pillow reports a multi-picture JPEG (phone depth maps, previews) as MPO.
    job.family = "JPEG" if job.source.format == "MPO" else str(job.source.format)
    return job


def _frames_to_decode(job: ImageJob) -> int:
    """JPEG output holds one picture, so only an MPO's first image is decoded."""
    return 1 if job.family == "JPEG" else int(getattr(job.opened(), "n_frames", 1))


def check_budgets(job: ImageJob) -> ImageJob:
    """Refuse by header: pixels, frames and whole-animation pixels, before any decoding."""
    limits = job.limits
    width, height = job.opened().size
    if width * height == 0:
        raise ProcessingError("IMAGE_CORRUPT", internal="zero-sized image")
    if width * height > limits.max_pixels:
        raise ProcessingError("IMAGE_TOO_MANY_PIXELS", internal=f"{width}x{height}")
    with _decoding():
        frames = _frames_to_decode(job)
    if frames > limits.max_frames:
        raise ProcessingError("IMAGE_TOO_MANY_FRAMES", internal=f"{frames} frames")
    if frames > 1 and width * height * frames > limits.max_animation_pixels:
        raise ProcessingError("IMAGE_TOO_MANY_PIXELS", internal=f"{frames}x{width}x{height}")
    return job


def decode_frames(job: ImageJob) -> ImageJob:
    """Fully decode every frame at full size, re-checking the budget per frame.

    A GIF frame may reach past the logical screen and grow the canvas on seek, so sizes are
    checked again after each one. Truncated data must fail: LOAD_TRUNCATED_IMAGES would pad it.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    source = job.opened()
    count = _frames_to_decode(job)
    total_pixels = 0
    for index in range(count):
        with _decoding():
            source.seek(index)
            source.load()
        width, height = source.size
        total_pixels += width * height
        animation_too_big = count > 1 and total_pixels > job.limits.max_animation_pixels
        if width * height > job.limits.max_pixels or animation_too_big:
            raise ProcessingError("IMAGE_TOO_MANY_PIXELS", internal=f"frame {index} grew")
        job.frames.append(source if count == 1 else source.copy())
        job.durations.append(int(source.info.get("duration", 0)))
    job.loop = source.info.get("loop")
    return job


def inventory_metadata(job: ImageJob) -> ImageJob:
    """Note which metadata blocks the file carries, for ``removed_metadata`` in info.json."""
    for frame in job.frames:
        job.found_metadata.update(metadata_in(frame))
    with _decoding():
        text = getattr(job.source, "text", None) or {}
    if set(text) - set(XMP_KEYS):
        job.found_metadata.add("png_text")
    if job.source is not None and job.source.format == "MPO":
        job.found_metadata.add("mpo_images")
    return job


def orient_frames(job: ImageJob) -> ImageJob:
    """Apply the EXIF (or XMP) orientation to every frame, as ImageOps.exif_transpose would.

    exif_transpose handles only the current frame and copies the image even when upright;
    this reads the orientation once and transposes each frame only when needed.
    """
    method = upright_transform(job.frames[0])
    if method is not None:
        job.frames = [frame.transpose(method) for frame in job.frames]
    return job


def strip_metadata(job: ImageJob) -> ImageJob:
    """Keep only pixels: colour profile baked in, then every metadata block left behind."""
    job.frames = [pixels_only(to_srgb(frame)) for frame in job.frames]
    job.close()  # the decoder's buffers are no longer needed; release them early
    return job


def _encoder_params(job: ImageJob) -> dict[str, Any]:
    limits = job.limits
    params: dict[str, Any] = {
        "JPEG": {"quality": limits.jpeg_quality},
        "WEBP": {"quality": limits.webp_quality},
    }.get(job.family, {})
    if len(job.frames) > 1:
        params.update(save_all=True, append_images=job.frames[1:], duration=job.durations)
        if job.loop is not None or job.family != "GIF":
            params["loop"] = job.loop or 0  # a GIF without a loop count plays once
        if job.family == "GIF" and any(_has_alpha(frame) for frame in job.frames):
            # Frames are whole composited pictures: clear the canvas between them, or pixels
            # that turn transparent keep showing the previous frame.
            params["disposal"] = 2
    return params


def _has_alpha(frame: Image.Image) -> bool:
    return frame.mode in ("RGBA", "LA", "PA") or "transparency" in frame.info


def write_sanitized(job: ImageJob) -> ImageJob:
    """Re-encode the clean pixels in the source's format family (animation kept, not JPEG)."""
    name, content_type = _SANITIZED[job.family]
    first = job.frames[0]
    if job.family == "JPEG" and first.mode not in ("L", "RGB"):
        first = first.convert("RGB")
    path = job.out_dir / name
    job.artifacts.append(ArtifactFile(name, path, content_type))
    first.save(path, format=job.family, **_encoder_params(job))
    return job


def _for_thumbnail(frame: Image.Image) -> Image.Image:
    """A frame LANCZOS can resample as colours: RGB, RGBA, LA and opaque L as they are (no
    copy; grey is widened to RGB after resampling, see ``_for_webp``), palette and other modes
    converted to RGB(A) first (resampling palette indices would mix unrelated colours)."""
    if frame.mode in ("RGB", "RGBA", "LA") or (frame.mode == "L" and not frame.has_transparency_data):
        return frame
    if frame.mode == "I;16":
        frame = frame.point(lambda value: value / 256).convert("L")
    return frame.convert("RGBA" if frame.has_transparency_data else "RGB")


def _for_webp(thumbnail: Image.Image) -> Image.Image:
    """WebP takes RGB or RGBA: grey thumbnails are widened after resampling, when they are small."""
    if thumbnail.mode in ("L", "LA"):
        return thumbnail.convert("RGBA" if thumbnail.mode == "LA" else "RGB")
    return thumbnail


def thumbnail_size(width: int, height: int, box: int) -> tuple[int, int]:
    """The size of a thumbnail whose longest side is at most ``box``, never upscaled: the other
    side is the floor or ceiling that keeps the aspect ratio closest, at least 1 (the rounding
    of ``Image.thumbnail``)."""
    if width <= box and height <= box:
        return width, height
    aspect = width / height

    def closest(value: float, error: Callable[[int], float]) -> int:
        return max(min(math.floor(value), math.ceil(value), key=error), 1)

    if height >= width:
        return closest(box * aspect, lambda n: abs(aspect - n / box)), box
    return box, closest(box / aspect, lambda n: abs(aspect - box / n) if n else math.inf)


def _downscale(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """LANCZOS to ``size``, after a box reduction by an integer factor (``reducing_gap``).

    Pillow's default gap (2.0) box-reduces only by ``int(ratio / 2)``, so a 3000 px frame to
    1024 px (ratio 2.93) gets no box step and LANCZOS runs over all 6 MP (~75 ms). Below a
    ratio of 4, a gap of 1.0 box-reduces by 2 (or 3) first and LANCZOS finishes the rest
    (~31 ms, SSIM 0.995-0.9997 against plain LANCZOS on photos and a screenshot). From a ratio
    of 4 the default gap already box-reduces and leaves LANCZOS at least a 2x step, which keeps
    thumbnails sharp without aliasing (a pure 4x box step measured SSIM 0.978; with the 2x
    LANCZOS step 0.999).
    """
    if image.size == size:
        return image
    ratio = min(image.width / size[0], image.height / size[1])
    gap = 2.0 if ratio >= 4 else 1.0
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=gap)


def write_thumbnails(job: ImageJob) -> ImageJob:
    """One WebP per configured size from the first frame; longest side <= size, never upscaled.

    Sizes are made largest first, the largest from the decoded frame, each smaller one from the
    previous thumbnail (a few ms instead of another pass over the full frame); the sizes are
    computed from the full frame's, so chaining never changes them. Nothing here copies the
    full frame (it is shared with ``write_sanitized`` and ``write_image_info``).
    """
    first = job.frames[0]
    current = _for_thumbnail(first)
    for size in sorted(set(job.limits.thumbnail_sizes), reverse=True):
        current = _downscale(current, thumbnail_size(first.width, first.height, size))
        name = f"thumb-{size}.webp"
        path = job.out_dir / name
        job.artifacts.append(ArtifactFile(name, path, "image/webp"))
        _for_webp(current).save(
            path, format="WEBP", quality=job.limits.webp_quality, method=THUMBNAIL_WEBP_METHOD
        )
    return job


def write_image_info(job: ImageJob) -> ImageJob:
    """info.json: upright size, format family, frames kept and metadata removed."""
    width, height = job.frames[0].size
    job.info = {
        "width": width,
        "height": height,
        "format": job.family,
        "frames": len(job.frames),
        "removed_metadata": sorted(job.found_metadata),
    }
    job.artifacts.append(write_info(job.out_dir, job.info))
    return job


IMAGE_STEPS = (
    check_structure, open_image, check_budgets, decode_frames, inventory_metadata, orient_frames,
    strip_metadata, write_sanitized, write_thumbnails, write_image_info,
)


def process_image(src: Path, out_dir: Path, limits: ImageLimits, deadline: float) -> PipelineResult:
    """Run the image steps on ``src``, writing artifacts into ``out_dir`` (created if needed).

    On any failure the files written so far are removed and the error propagates.
    """
    with pillow_bomb_limit(limits.max_pixels):
        return run_pipeline(IMAGE_STEPS, ImageJob(src=src, out_dir=out_dir, limits=limits), deadline)

