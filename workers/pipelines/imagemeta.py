"""Pixel-level helpers of the image pipeline: metadata inventory, orientation, colour profiles.

Plain functions over Pillow images, split out of ``image.py`` (which holds the steps) so each
module stays readable.
"""

from __future__ import annotations

import functools
import io
import struct

from PIL import ExifTags, Image, ImageCms

# What Pillow raises on malformed input, beyond OSError/SyntaxError (its documented ones).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError)
XMP_KEYS = ("xmp", "XML:com.adobe.xmp")
# The table of ImageOps.exif_transpose, kept here so that every frame gets the same transform.
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}


def read_exif(image: Image.Image) -> Image.Exif | None:
    """Parse EXIF leniently: a broken block is stripped anyway and must not fail the image."""
    try:
        return image.getexif()
    except DECODE_ERRORS:
        return None


def metadata_in(frame: Image.Image) -> set[str]:
    """The names of the metadata blocks one decoded frame carries."""
    found: set[str] = set()
    info = frame.info
    if info.get("exif") or "Raw profile type exif" in info:
        found.add("exif")
        exif = read_exif(frame)
        if exif is not None and ExifTags.IFD.GPSInfo in exif:
            found.add("gps")
    names = {
        "xmp": any(info.get(key) for key in XMP_KEYS),
        "icc_profile": bool(info.get("icc_profile")),
        "comment": bool(info.get("comment")),
        "photoshop": bool(info.get("photoshop")),
    }
    found.update(name for name, present in names.items() if present)
    return found


def upright_transform(frame: Image.Image) -> Image.Transpose | None:
    """The transpose that applies the frame's EXIF (or XMP) orientation; None when upright."""
    exif = read_exif(frame)
    orientation = exif.get(ExifTags.Base.Orientation, 1) if exif is not None else 1
    return _TRANSPOSE_FOR_ORIENTATION.get(orientation)


@functools.lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def to_srgb(frame: Image.Image) -> Image.Image:
    """Bake an embedded colour profile into sRGB pixels before the profile is dropped.

    Dropping a Display P3 or CMYK profile without converting visibly shifts colours. A profile
    that cannot be used (wrong colour space, garbage) is simply dropped.
    """
    icc = frame.info.get("icc_profile")
    if not icc or frame.mode not in ("RGB", "RGBA", "CMYK"):
        return frame
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "sRGB" in ImageCms.getProfileDescription(profile) and frame.mode != "CMYK":
            return frame
        mode = "RGBA" if frame.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(frame, profile, _srgb_profile(), outputMode=mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return frame
    return converted if converted is not None else frame


def pixels_only(frame: Image.Image) -> Image.Image:
    """A new image with the frame's pixels and palette and nothing else.

    The new image is a plain ``Image`` around the frame's pixel core (no EXIF cache, no PNG
    text, no JPEG markers), built the way ``copy()`` builds one but without duplicating the
    pixels (18 MB for a 6 MP photo): the frame is not changed afterwards, and the pipeline
    closes the decoder's image right after. Its ``info`` is then replaced, keeping only
    transparency, which is pixel meaning. Encoders read ``info`` as defaults (JPEG comment, PNG
    ICC, every GIF key), so it must go.
    """
    frame.load()
    clean = frame._new(frame.im)  # copy() is _new(im.copy()); no public constructor shares the core
    clean.info = {key: frame.info[key] for key in ("transparency",) if key in frame.info}
    return clean
