"""Request bodies, generated in code like the test samples (and from them where they fit)."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import pikepdf
from PIL import Image

from tests import samples

MiB = 1024 * 1024


@dataclass(frozen=True)
class Body:
    """Bytes ready to send as they are, with their ``Content-Type`` header."""

    content: bytes
    content_type: str

    @property
    def size(self) -> int:
        return len(self.content)


def pdf_of_size(size: int, seed: int = 0) -> bytes:
    """A valid one-page PDF (``tests.samples.pdf_bytes``) grown to about ``size`` bytes by an
    unreferenced stream of random bytes, stored uncompressed (random data does not deflate)."""
    base = samples.pdf_bytes()
    with pikepdf.open(io.BytesIO(base)) as pdf:
        padding = max(0, size - len(base) - 256)
        rng, chunk = random.Random(seed), 64 * MiB  # randbytes takes at most 2**28 bytes at once
        pdf.Root.BenchPadding = pdf.make_stream(
            b"".join(rng.randbytes(min(chunk, padding - start)) for start in range(0, padding, chunk))
        )
        out = io.BytesIO()
        pdf.save(out, compress_streams=False)
    return out.getvalue()


def noise_png(width: int = 96, height: int = 72, seed: int = 0) -> bytes:
    """An RGB PNG of random pixels: 96x72 is about 20 KiB, as noise does not compress."""
    pixels = random.Random(seed).randbytes(width * height * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(out, "PNG")
    return out.getvalue()


def noise_png_of_size(size: int, seed: int = 0) -> bytes:
    """A noise PNG (``noise_png``) of about ``size`` bytes (within a few hundred): 4:3, the
    height nudged until the file is as close to ``size`` as it gets from below."""
    width = max(8, round((size / 3 * 4 / 3) ** 0.5))
    height = max(8, size // (width * 3))
    data = noise_png(width, height, seed)
    while len(data) > size and height > 8:
        height -= 1
        data = noise_png(width, height, seed)
    return data


def raw(content: bytes, content_type: str) -> Body:
    return Body(content, content_type)


def multipart(content: bytes, filename: str, content_type: str, field: str = "file") -> Body:
    """A ``multipart/form-data`` body with one file part, built once so that every server gets
    the same bytes and the client does no per-request encoding work."""
    boundary = f"bench{random.Random(len(content)).getrandbits(64):016x}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return Body(head + content + tail, f"multipart/form-data; boundary={boundary}")
