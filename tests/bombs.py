"""Hostile images that stay inside the pixel budget but not inside the decoder's work budget.

Built in code from real files made by Pillow (or by hand, byte by byte, where Pillow refuses to
write them), so a reader sees exactly what makes each one expensive.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

from PIL import Image

_SOS, _EOI = 0xDA, 0xD9


@functools.lru_cache(maxsize=4)
def progressive_jpeg(side: int) -> bytes:
    """A real progressive (10-scan) JPEG of a smooth gradient: small in bytes for its size."""
    image = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, "JPEG", progressive=True, quality=75)
    return buf.getvalue()


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """``(marker, start, end)`` of every marker segment; an SOS segment runs to the end of its
    entropy-coded data."""
    pos, found = 2, []
    while pos < len(data):
        marker = data[pos + 1]
        if marker == _EOI:
            found.append((marker, pos, pos + 2))
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if marker == _SOS:
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        found.append((marker, pos, end))
        pos = end
    return found


def jpeg_scan_bomb(side: int, extra_scans: int) -> bytes:
    """A progressive JPEG of ``side`` x ``side`` with its cheapest luma AC scan repeated
    ``extra_scans`` more times before EOI.

    Each copy is ~14 bytes, and each makes libjpeg walk every luma block of the image again
    (a repeated scan is only a warning to libjpeg, which Pillow ignores).
    """
    data = progressive_jpeg(side)
    segments = jpeg_segments(data)
    scans = [(start, end) for marker, start, end in segments if marker == _SOS
             and data[start + 4] == 1 and data[start + 5] == 1]  # one component: luma (id 1)
    start, end = min(scans, key=lambda scan: scan[1] - scan[0])
    eoi = segments[-1][1]
    return data[:eoi] + data[start:end] * extra_scans + data[eoi:]


#: A scan budget that lets ``cpu_bomb()`` through (the most the settings allow), so a CPU or
#: wall-clock budget has to stop it.
CPU_BOMB_SCANS_ALLOWED = 10_000
#: Repeated scans of a 2000 x 2000 progressive JPEG, just inside that budget: ~2 s of decoding
#: on a fast core (5,000 took 0.9 s there, too close to a 1 s CPU budget to be sure to cross it).
CPU_BOMB_EXTRA_SCANS = CPU_BOMB_SCANS_ALLOWED - 100


def cpu_bomb() -> bytes:
    """A JPEG that passes a scan budget of ``CPU_BOMB_SCANS_ALLOWED`` and decodes for seconds."""
    return jpeg_scan_bomb(2000, CPU_BOMB_EXTRA_SCANS)


def jpeg_with_comments(count: int) -> bytes:
    """A small JPEG with ``count`` empty COM segments before its frame header."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buf, "JPEG")
    data = buf.getvalue()
    return data[:2] + b"\xff\xfe\x00\x02" * count + data[2:]


def jpeg_with_junk_between_segments() -> bytes:
    """A small JPEG with stray bytes before its frame header, as some cameras write: Pillow and
    libjpeg skip them (libjpeg with a warning), so the file must still be processed."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buf, "JPEG")
    data = buf.getvalue()
    sof = next(start for kind, start, _ in jpeg_segments(data) if kind == 0xC0)
    return data[:sof] + b"junk" + data[sof:]


def jpeg_with_frame(marker: int = 0xC0, components: int = 3) -> bytes:
    """A small baseline JPEG whose frame header is rewritten: another SOF type, or another
    component count (the rest of the file no longer matches, which the scan never reaches)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = next(start for kind, start, _ in jpeg_segments(bytes(data)) if kind == 0xC0)
    data[sof + 1] = marker
    data[sof + 9] = components
    return bytes(data)


def _gif(screen: tuple[int, int], frames: list[tuple[int, int, int, int]], extensions: int = 0) -> bytes:
    """A GIF89a with a 2-colour global palette and one-pixel-of-colour-0 frames at the given
    ``(left, top, width, height)``, each frame's LZW data coding its first pixel only."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff")
    out += b"!\xfe\x00" * extensions  # empty comment extensions
    for left, top, width, height in frames:
        out += b"," + struct.pack("<HHHHB", left, top, width, height, 0)
        out += b"\x02\x02\x44\x01\x00"  # min code size 2; codes clear, 0, end: 0x44 0x01
    return bytes(out + b";")


def gif_frame_outside_screen(canvas: int) -> bytes:
    """The review's sample: a 1x1 logical screen and a 1x1 frame at (canvas-1, canvas-1), which
    makes Pillow grow its canvas to canvas x canvas on load. 35 bytes."""
    return _gif((1, 1), [(canvas - 1, canvas - 1, 1, 1)])


def gif_frame_inside_screen(side: int) -> bytes:
    """The same construction, legal: a side x side screen with a 1x1 frame in its far corner."""
    return _gif((side, side), [(side - 1, side - 1, 1, 1)])


def gif_with_extensions(count: int) -> bytes:
    """A 1x1 GIF with ``count`` empty comment extensions (3 bytes each) before its frame."""
    return _gif((1, 1), [(0, 0, 1, 1)], extensions=count)


def gif_with_frames(count: int) -> bytes:
    """A 1x1 GIF of ``count`` frames."""
    return _gif((1, 1), [(0, 0, 1, 1)] * count)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_chunks(count: int, kind: bytes = b"teSt") -> bytes:
    """A 4x4 grey PNG with ``count`` empty ancillary chunks before its pixel data."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0))
    pixels = _chunk(b"IDAT", zlib.compress(b"\x00\x80\x80\x80\x80" * 4))
    return b"\x89PNG\r\n\x1a\n" + header + _chunk(kind, b"") * count + pixels + _chunk(b"IEND", b"")


def apng(frames: int = 2, claimed_frames: int | None = None, offset: tuple[int, int] = (0, 0)) -> bytes:
    """An 8x8 APNG made by Pillow, with acTL's frame count and the second frame's offset
    rewritten (CRCs fixed up)."""
    images = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, "PNG", save_all=True, append_images=images[1:], duration=100)
    data, pos, out, seen_fctl = buf.getvalue(), 8, [buf.getvalue()[:8]], 0
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = bytearray(data[pos + 8:pos + 8 + length])
        if kind == b"acTL" and claimed_frames is not None:
            body[0:4] = struct.pack(">I", claimed_frames)
        if kind == b"fcTL":
            seen_fctl += 1
            if seen_fctl == 2:
                body[12:20] = struct.pack(">II", *offset)
        out.append(_chunk(kind, bytes(body)))
        pos += 12 + length
    return b"".join(out)


def animated_webp(frames: int = 2, offset: tuple[int, int] = (0, 0)) -> bytes:
    """A 16x16 animated WebP made by Pillow, its last frame moved to ``offset`` (even numbers)."""
    images = [Image.new("RGB", (16, 16), (0, i * 20 % 256, i % 256)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, "WEBP", save_all=True, append_images=images[1:], duration=100, lossless=True)
    data = bytearray(buf.getvalue())
    last = data.rindex(b"ANMF") + 8
    data[last:last + 3] = (offset[0] // 2).to_bytes(3, "little")
    data[last + 3:last + 6] = (offset[1] // 2).to_bytes(3, "little")
    return bytes(data)
