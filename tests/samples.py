"""Test inputs generated in code: images, PDFs and hostile files, returned as bytes.

Every test in the repository builds its inputs here instead of committing binary fixtures, so a
reader can see exactly what each sample contains and why it is hostile. Nothing touches the disk;
callers write the bytes where they need them. Every generator returns the same bytes on every
call, except the encrypted PDFs (encryption draws a random salt and IV).
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zipfile
import zlib

import pikepdf
from PIL import ExifTags, Image, ImageCms
from pikepdf import Array, Dictionary, Name, String

RED = (255, 0, 0)
BLUE = (0, 0, 255)
SECRET_COMMENT = b"secret-comment-do-not-leak"
SECRET_XMP_CREATOR = b"Secret Person"
PDF_JS_MARKER = "app.alert('pwned')"

_XMP_PACKET = (
    b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>' + SECRET_XMP_CREATOR
    + b"</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>"
    b'<?xpacket end="w"?>'
)


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    """Seeded grayscale noise: random-looking pixels, the same bytes on every run."""
    return Image.frombytes("L", (w, h), random.Random(seed).randbytes(w * h))


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


# --- images -------------------------------------------------------------------------------------


def png_bytes(w: int = 64, h: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A plain RGB PNG of one color."""
    return _save(Image.new("RGB", (w, h), color), "PNG")


def jpeg_bytes(w: int = 64, h: int = 48) -> bytes:
    """A plain baseline RGB JPEG (a gradient, so it is not trivially compressible)."""
    image = Image.linear_gradient("L").resize((w, h)).convert("RGB")
    return _save(image, "JPEG", quality=90)


def srgb_icc_profile() -> bytes:
    """lcms's built-in sRGB profile, with its creation date zeroed so the bytes are stable."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return icc[:24] + bytes(12) + icc[36:]


def swapped_primaries_icc_profile() -> bytes:
    """An RGB profile that is sRGB with the red and blue primaries swapped, named "Swap".

    A pixel stored as (200, 30, 30) under it is meant to look blue, so a test can tell a real
    conversion to sRGB from a profile that was merely dropped.
    """
    icc = bytearray(srgb_icc_profile())
    count = struct.unpack_from(">I", icc, 128)[0]
    entries = {bytes(icc[132 + 12 * i: 136 + 12 * i]): 132 + 12 * i for i in range(count)}
    red, blue = entries[b"rXYZ"] + 4, entries[b"bXYZ"] + 4  # each: offset and size of the data
    icc[red:red + 8], icc[blue:blue + 8] = icc[blue:blue + 8], icc[red:red + 8]
    return bytes(icc).replace("sRGB".encode("utf-16-be"), "Swap".encode("utf-16-be"))


@functools.lru_cache(maxsize=2)
def noisy_jpeg_bytes(w: int = 6000, h: int = 4000) -> bytes:
    """A large JPEG whose full-resolution noise defeats compression, for tests that need a job
    to take a while. 6000x4000 is about 13 MB (under the 20 MB image limit); cached, as
    building it takes ~0.5 s."""
    gradient = Image.linear_gradient("L").resize((w, h))
    noise = _noise(w, h).point(lambda value: 64 + value // 2)
    image = Image.merge("RGB", [gradient, noise, Image.radial_gradient("L").resize((w, h))])
    return _save(image, "JPEG", quality=90)


def jpeg_with_exif_gps_orientation6(w: int = 80, h: int = 40) -> bytes:
    """A JPEG stored sideways (Orientation=6) that carries every metadata block we strip.

    Stored pixels: left half red, right half blue. Orientation 6 means "rotate 90° clockwise to
    display", so the upright image is h x w with red on top and blue at the bottom.
    Metadata: EXIF (Make, Orientation) with a GPS IFD whose processing method spells ``GPS``,
    an XMP packet naming a creator, a COM comment and an sRGB ICC profile.
    """
    image = Image.new("RGB", (w, h), BLUE)
    image.paste(RED, (0, 0, w // 2, h))
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SampleCam"
    exif[ExifTags.Base.Orientation] = 6
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 29.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (2.0, 17.0, 40.0)
    gps[ExifTags.GPS.GPSProcessingMethod] = b"ASCII\x00\x00\x00GPS"
    return _save(
        image, "JPEG", quality=95, exif=exif, xmp=_XMP_PACKET, comment=SECRET_COMMENT,
        icc_profile=srgb_icc_profile(),
    )


def gif_bytes() -> bytes:
    """A single-frame palette GIF."""
    return _save(Image.new("RGB", (40, 30), (10, 200, 10)).convert("P"), "GIF")


ANIMATION_COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


def animated_gif_bytes(frames: int = 3) -> bytes:
    """A looping GIF whose frame i is a solid ``ANIMATION_COLORS[i % 5]``, 100 ms each."""
    images = [
        Image.new("RGB", (32, 24), ANIMATION_COLORS[i % len(ANIMATION_COLORS)]).convert("P")
        for i in range(frames)
    ]
    return _save(images[0], "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)


def webp_bytes() -> bytes:
    """A lossy RGB WebP."""
    return _save(Image.new("RGB", (50, 40), (20, 20, 220)), "WEBP", quality=80)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.lru_cache(maxsize=4)
def png_bomb_bytes(side: int = 30000) -> bytes:
    """A valid 1-bit grayscale PNG of side x side zero pixels (a decompression bomb).

    30000² = 900 M pixels (about 112 MB of 1-bit rows, 900 MB once decoded to 8 bits) deflate to
    roughly 110 KB: the header alone must be enough to refuse it. Cached: building it takes ~0.4 s.
    """
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def truncated_jpeg_bytes() -> bytes:
    """A noisy JPEG cut in the middle of its scan data (no EOI marker)."""
    data = _save(_noise(256, 256).convert("RGB"), "JPEG", quality=90)
    return data[: len(data) // 2]


# --- PDFs ---------------------------------------------------------------------------------------


def _new_pdf(pages: int) -> pikepdf.Pdf:
    pdf = pikepdf.new()
    for _ in range(pages):
        page = pdf.add_blank_page(page_size=(612, 792))
        page.obj.Contents = pdf.make_stream(b"0 0 1 rg 100 100 300 400 re f")
    pdf.docinfo[Name.Title] = String("Sample document")
    pdf.docinfo[Name.Producer] = String("tests.samples")
    return pdf


def _pdf_to_bytes(pdf: pikepdf.Pdf, encryption: pikepdf.Encryption | None = None) -> bytes:
    buf = io.BytesIO()
    pdf.save(buf, encryption=encryption)
    return buf.getvalue()


def pdf_bytes(pages: int = 1) -> bytes:
    """A plain valid US-letter PDF; each page shows a blue rectangle. Title "Sample document"."""
    return _pdf_to_bytes(_new_pdf(pages))


def _javascript_action(script: str) -> Dictionary:
    return Dictionary(Type=Name.Action, S=Name.JavaScript, JS=String(script))


def pdf_with_active_content() -> bytes:
    """A one-page PDF carrying active content in the places a top-level key scan misses.

    - Catalog ``/OpenAction``: a JavaScript action.
    - Catalog ``/Names/JavaScript``: a document-level script in a name tree.
    - Catalog ``/Names/EmbeddedFiles``: an embedded file (a file spec with ``/EF``).
    - Catalog ``/AcroForm/XFA``: an XFA stream.
    - Page ``/AA``: an open action running JavaScript.
    - Page annotations: a ``/Link`` whose ``/A`` is ``/S /Launch``, a ``/FileAttachment``
      annotation, and a harmless ``/Link`` to an https URI that must survive sanitizing.
    Every script contains ``PDF_JS_MARKER``.
    """
    pdf = _new_pdf(1)
    payload = pdf.make_stream(b"MZ pretend this is an executable")
    payload.Type = Name.EmbeddedFile
    filespec = pdf.make_indirect(
        Dictionary(Type=Name.Filespec, F=String("invoice.exe"), EF=Dictionary(F=payload))
    )
    pdf.Root.OpenAction = _javascript_action(PDF_JS_MARKER)
    pdf.Root.Names = Dictionary(
        JavaScript=Dictionary(Names=Array([String("init"), _javascript_action(PDF_JS_MARKER)])),
        EmbeddedFiles=Dictionary(Names=Array([String("invoice.exe"), filespec])),
    )
    pdf.Root.AcroForm = Dictionary(Fields=Array(), XFA=pdf.make_stream(b"<xdp:xdp/>"))
    page = pdf.pages[0].obj
    page.AA = Dictionary(O=_javascript_action(PDF_JS_MARKER))
    rect = Array([100, 100, 200, 150])
    launch = Dictionary(S=Name.Launch, F=String("calc.exe"))
    page.Annots = Array([
        pdf.make_indirect(Dictionary(Type=Name.Annot, Subtype=Name.Link, Rect=rect, A=launch)),
        pdf.make_indirect(Dictionary(
            Type=Name.Annot, Subtype=Name.FileAttachment, Rect=rect, FS=filespec,
        )),
        pdf.make_indirect(Dictionary(
            Type=Name.Annot, Subtype=Name.Link, Rect=rect,
            A=Dictionary(S=Name.URI, URI=String("https://example.com/")),
        )),
    ])
    return _pdf_to_bytes(pdf)


PDF_USER_PASSWORD = "user-secret"


def encrypted_pdf_bytes() -> bytes:
    """A PDF that needs a user password (AES-256) to open at all."""
    encryption = pikepdf.Encryption(user=PDF_USER_PASSWORD, owner="owner-secret", R=6)
    return _pdf_to_bytes(_new_pdf(1), encryption=encryption)


def owner_password_only_pdf_bytes() -> bytes:
    """An encrypted PDF with an empty user password: it opens without one (permissions only)."""
    encryption = pikepdf.Encryption(user="", owner="owner-secret", R=6)
    return _pdf_to_bytes(_new_pdf(1), encryption=encryption)


def repairable_pdf_bytes() -> bytes:
    """A valid PDF whose cross-reference offsets are wrong: qpdf rebuilds them and opens it."""
    data = pdf_bytes(2)
    start = data.rindex(b"startxref")
    return data[:start] + b"startxref\n999999\n%%EOF\n"


def truncated_pdf_bytes() -> bytes:
    """A PDF header followed by garbage: qpdf finds no objects and no trailer to recover.

    A PDF cut in half is not enough: qpdf rebuilds the cross-reference table from the objects
    it can still find and opens it. Only the header survives here.
    """
    return pdf_bytes(1)[:9] + bytes(range(256)) * 8


# --- hostile, non-allowed types -----------------------------------------------------------------


def html_bytes() -> bytes:
    """An HTML page with an inline script."""
    return b"<!DOCTYPE html>\n<html><body><script>alert(document.cookie)</script></body></html>\n"


def svg_bytes() -> bytes:
    """An SVG image carrying a script (the reason SVG is refused)."""
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b"<script>alert(1)</script><rect width=\"10\" height=\"10\"/></svg>\n"
    )


def zip_bytes() -> bytes:
    """A ZIP archive holding one small text file."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        entry = zipfile.ZipInfo("readme.txt", date_time=(2020, 1, 1, 0, 0, 0))
        archive.writestr(entry, "hello from a zip\n", compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def elf_bytes() -> bytes:
    """A minimal 64-bit little-endian x86-64 ELF executable header (64 bytes, no body)."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\x00" * 8
    fields = struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x400078, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    return ident + fields
