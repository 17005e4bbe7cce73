"""Byte-level structure scans of the four allowed image formats, run before any pixel is decoded.

The header budgets (pixels, frames) bound what a decoder *allocates*; they say nothing of how
often it walks the pixels, or how long a parser loops over a file's markers. These scans read
the container structure with a few C-speed searches and refuse the decoder work factors a header
check misses:

- JPEG: every SOS segment is one more pass of libjpeg over every block of its components, so a
  progressive file that repeats one cheap scan thousands of times costs seconds to minutes of
  CPU inside the pixel budget (``max_jpeg_scans``). Frame types other than baseline, extended
  and progressive (lossless, hierarchical) and more than four components are not processed.
- GIF: a frame whose image descriptor reaches past the logical screen makes Pillow grow the
  canvas to cover it, so an 85-byte file with a 1x1 screen and a 1x1 frame at (6999, 6999)
  allocates a 7000x7000 canvas. The GIF spec requires frames to lie inside the logical screen:
  a frame outside it is refused as corrupt, before anything is loaded. Frames are counted here,
  before Pillow walks them.
- PNG: APNG frame counts and frame extents; chunks counted (Pillow parses every chunk in Python,
  ~7 s for a million empty chunks).
- WebP: animation frames counted and each frame checked inside the canvas.

Every format: the number of markers, chunks or blocks is capped (``max_segments``), and the
scan stops at the cap, so the scan itself is bounded too.
"""

from __future__ import annotations

import contextlib
import re
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from workers.pipelines.base import ProcessingError

# In entropy-coded JPEG data 0xFF is followed by 0x00 (a stuffed byte), a restart marker
# (0xD0-0xD7) or fill 0xFF; anything else ends the scan.
_JPEG_MARKER_IN_DATA = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# SOF markers libjpeg-turbo decodes through Pillow: baseline, extended, progressive (Huffman or
# arithmetic coding). Lossless (C3, CB) and hierarchical (C5-C7, CD-CF) frames are refused.
_JPEG_SOF_ALLOWED = {0xC0, 0xC1, 0xC2, 0xC9, 0xCA}
_JPEG_SOF_ALL = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = set(range(0xD0, 0xD8)) | {0x01}
_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9
_JPEG_MAX_COMPONENTS = 4


@dataclass(frozen=True)
class ScanLimits:
    """The work factors a structure scan enforces (built from ``ImageLimits``)."""

    max_pixels: int
    max_frames: int
    max_jpeg_scans: int
    max_segments: int


@dataclass(frozen=True)
class ImageStructure:
    """What a scan found: enough for the log and for the budgets that follow."""

    width: int
    height: int
    frames: int = 1
    scans: int = 0
    segments: int = 0


@contextlib.contextmanager
def pillow_bomb_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's own bomb check tightened to our pixel budget (never loosened past its default),
    its warning raised as an error, for this run only: nothing changes at import.

    Pillow checks sizes where ours cannot reach, e.g. a GIF canvas growing on seek.
    """
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = min(max_pixels, previous) if previous is not None else max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _corrupt(detail: str) -> ProcessingError:
    return ProcessingError("IMAGE_CORRUPT", internal=detail)


def _too_complex(detail: str) -> ProcessingError:
    return ProcessingError("IMAGE_TOO_COMPLEX", internal=detail)


def _count_segment(count: int, limits: ScanLimits, what: str) -> int:
    count += 1
    if count > limits.max_segments:
        raise _too_complex(f"more than {limits.max_segments} {what}")
    return count


def family_of(head: bytes) -> str | None:
    """The format family a file's first 16 bytes announce, if it is one of the four."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def scan_structure(data: bytes, family: str, limits: ScanLimits) -> ImageStructure:
    """Scan ``data`` of format ``family`` (JPEG, PNG, GIF, WEBP); raise ``ProcessingError``
    (``IMAGE_TOO_COMPLEX``, ``IMAGE_CORRUPT``, ...) on a work factor over ``limits``."""
    scanners = {"JPEG": scan_jpeg, "PNG": scan_png, "GIF": scan_gif, "WEBP": scan_webp}
    try:
        return scanners[family](data, limits)
    except (IndexError, struct.error) as exc:  # read past the end: the structure is cut short
        raise _corrupt(f"{family} structure truncated: {exc!r}") from exc


# --- JPEG ---------------------------------------------------------------------------------------


def scan_jpeg(data: bytes, limits: ScanLimits) -> ImageStructure:
    """Walk the markers of the first image (up to its EOI, as the decoder does), counting scans.

    Each SOS makes libjpeg run over every block of the components it names: scans beyond
    ``max_jpeg_scans`` are refused without decoding anything.
    """
    if data[:2] != b"\xff\xd8":
        raise _corrupt("no JPEG SOI marker")
    pos, scans, segments = 2, 0, 0
    width = height = 0
    while pos < len(data):
        if data[pos] != 0xFF:  # junk between segments: Pillow and libjpeg skip it, so do we
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            segments = _count_segment(segments, limits, "JPEG markers")
            continue
        while data[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
        marker = data[pos + 1]
        segments = _count_segment(segments, limits, "JPEG markers")
        if marker == _JPEG_EOI:
            break
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2 or pos + 2 + length > len(data):
            raise _corrupt(f"JPEG segment {marker:#x} of length {length} at byte {pos}")
        body = pos + 4
        if marker in _JPEG_SOF_ALL:
            if width:
                raise _corrupt("more than one JPEG frame header")
            width, height = _check_jpeg_frame(data, body, marker, limits)
        pos = pos + 2 + length
        if marker == _JPEG_SOS:
            if not width:
                raise _corrupt("JPEG scan before the frame header")
            scans += 1
            if scans > limits.max_jpeg_scans:
                raise _too_complex(f"more than {limits.max_jpeg_scans} JPEG scans")
            found = _JPEG_MARKER_IN_DATA.search(data, pos)
            if found is None:
                break  # truncated entropy data: the decoder reports it
            pos = found.start()
    if not width:
        raise _corrupt("no JPEG frame header")
    return ImageStructure(width, height, scans=scans, segments=segments)


def _check_jpeg_frame(data: bytes, body: int, marker: int, limits: ScanLimits) -> tuple[int, int]:
    if marker not in _JPEG_SOF_ALLOWED:
        raise ProcessingError("IMAGE_FORMAT_NOT_ALLOWED", internal=f"JPEG frame type {marker:#x}")
    _precision, height, width, components = struct.unpack_from(">BHHB", data, body)
    if not 1 <= components <= _JPEG_MAX_COMPONENTS:
        raise _corrupt(f"JPEG with {components} components")
    for index in range(components):
        sampling = data[body + 6 + 3 * index + 1]
        if not (1 <= sampling >> 4 <= 4 and 1 <= sampling & 15 <= 4):
            raise _corrupt(f"JPEG sampling factors {sampling:#x}")
    if width * height > limits.max_pixels:
        raise ProcessingError("IMAGE_TOO_MANY_PIXELS", internal=f"JPEG frame {width}x{height}")
    return width, height


# --- PNG ----------------------------------------------------------------------------------------


def scan_png(data: bytes, limits: ScanLimits) -> ImageStructure:
    """Walk the chunks: count them, and check APNG's frame count and every frame's extent."""
    pos, segments, frames = 8, 0, 0
    width = height = 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        segments = _count_segment(segments, limits, "PNG chunks")
        body = pos + 8
        if body + length + 4 > len(data):
            break  # truncated: the decoder reports it
        if kind == b"IHDR":
            width, height = struct.unpack_from(">II", data, body)
        elif kind == b"acTL":
            (frames,) = struct.unpack_from(">I", data, body)
            if frames > limits.max_frames:
                raise ProcessingError("IMAGE_TOO_MANY_FRAMES", internal=f"APNG acTL {frames} frames")
        elif kind == b"fcTL":
            f_width, f_height, f_left, f_top = struct.unpack_from(">IIII", data, body + 4)
            if f_left + f_width > width or f_top + f_height > height:
                raise _corrupt(f"APNG frame {f_width}x{f_height}+{f_left}+{f_top} outside {width}x{height}")
        elif kind == b"IEND":
            break
        pos = body + length + 4
    return ImageStructure(width, height, frames=max(frames, 1), segments=segments)


# --- GIF ----------------------------------------------------------------------------------------


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    """Skip a chain of GIF data sub-blocks (length byte + data) up to its 0 terminator."""
    while True:
        size = data[pos]
        pos += 1
        if size == 0:
            return pos
        pos += size


def scan_gif(data: bytes, limits: ScanLimits) -> ImageStructure:
    """Walk the blocks: count frames and check each frame lies inside the logical screen."""
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = segments = 0
    while pos < len(data):
        introducer = data[pos]
        segments = _count_segment(segments, limits, "GIF blocks")
        if introducer == 0x3B:  # trailer
            break
        if introducer == 0x21:  # extension: label, then sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif introducer == 0x2C:  # image descriptor
            left, top, f_width, f_height, f_flags = struct.unpack_from("<HHHHB", data, pos + 1)
            if left + f_width > width or top + f_height > height:
                raise _corrupt(
                    f"GIF frame {frames} {f_width}x{f_height}+{left}+{top} outside the "
                    f"{width}x{height} logical screen"
                )
            frames += 1
            if frames > limits.max_frames:
                raise ProcessingError("IMAGE_TOO_MANY_FRAMES", internal=f"more than {limits.max_frames} GIF frames")
            pos += 10 + (3 << ((f_flags & 7) + 1) if f_flags & 0x80 else 0)
            pos = _skip_sub_blocks(data, pos + 1)  # LZW minimum code size, then the data
        else:
            pos += 1  # Pillow skips an unknown byte and reads on: so does the scan (counted)
    return ImageStructure(width, height, frames=max(frames, 1), segments=segments)


# --- WebP ---------------------------------------------------------------------------------------


def _u24(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos:pos + 3], "little")


def scan_webp(data: bytes, limits: ScanLimits) -> ImageStructure:
    """Walk the RIFF chunks: the VP8X canvas, the number of ANMF frames, each inside the canvas."""
    pos, frames, segments = 12, 0, 0
    width = height = 0
    while pos + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, pos)
        segments = _count_segment(segments, limits, "WebP chunks")
        body = pos + 8
        if kind == b"VP8X":
            width, height = _u24(data, body + 4) + 1, _u24(data, body + 7) + 1
            if width * height > limits.max_pixels:
                raise ProcessingError("IMAGE_TOO_MANY_PIXELS", internal=f"WebP canvas {width}x{height}")
        elif kind in (b"VP8 ", b"VP8L") and not width:  # a still image without VP8X
            width, height = _webp_bitstream_size(data, body, kind)
            if width * height > limits.max_pixels:
                raise ProcessingError("IMAGE_TOO_MANY_PIXELS", internal=f"WebP {width}x{height}")
        elif kind == b"ANMF":
            left, top = 2 * _u24(data, body), 2 * _u24(data, body + 3)
            f_width, f_height = _u24(data, body + 6) + 1, _u24(data, body + 9) + 1
            if left + f_width > width or top + f_height > height:
                raise _corrupt(f"WebP frame {f_width}x{f_height}+{left}+{top} outside {width}x{height}")
            frames += 1
            if frames > limits.max_frames:
                raise ProcessingError("IMAGE_TOO_MANY_FRAMES", internal=f"more than {limits.max_frames} WebP frames")
        pos = body + length + (length & 1)  # chunks are padded to an even size
    return ImageStructure(width, height, frames=max(frames, 1), segments=segments)


def _webp_bitstream_size(data: bytes, body: int, kind: bytes) -> tuple[int, int]:
    """Width and height from a VP8 key frame header or a VP8L header."""
    if kind == b"VP8L":
        if data[body] != 0x2F:
            raise _corrupt("VP8L signature missing")
        bits = int.from_bytes(data[body + 1:body + 5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if data[body + 3:body + 6] != b"\x9d\x01\x2a":
        raise _corrupt("VP8 start code missing")
    width, height = struct.unpack_from("<HH", data, body + 6)
    return width & 0x3FFF, height & 0x3FFF
