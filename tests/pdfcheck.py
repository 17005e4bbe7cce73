"""An independent checker of the PDF allow-list, for the unit tests of the sanitizer and for the
integration tests that read the real ``sanitized.pdf`` back from storage.

It shares nothing with ``workers.pipelines.pdfactive``: its own vocabularies, its own notion of
where actions and annotations are, and it walks every object the file holds (not only reachable
ones), so a gap in the pipeline's walker shows up as a finding here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pikepdf
from pikepdf import Name


CHECK_ACTIONS = {"/GoTo", "/URI", "/Named"}
CHECK_TRIGGER_ACTIONS = {"/GoTo", "/Named"}
CHECK_NAMED = {"/NextPage", "/PrevPage", "/FirstPage", "/LastPage"}
CHECK_ANNOTATIONS = {
    "/Text", "/Link", "/FreeText", "/Line", "/Square", "/Circle", "/Polygon", "/PolyLine",
    "/Highlight", "/Underline", "/Squiggly", "/StrikeOut", "/Caret", "/Ink", "/Popup", "/Stamp",
    "/Widget",
}
EVERY_ACTION = {
    "/GoTo", "/GoToR", "/GoToE", "/GoToDp", "/Launch", "/Thread", "/URI", "/Sound", "/Movie",
    "/Hide", "/Named", "/SubmitForm", "/ResetForm", "/ImportData", "/JavaScript", "/SetOCGState",
    "/Rendition", "/Trans", "/GoTo3DView", "/RichMediaExecute",
}
EVERY_ANNOTATION = CHECK_ANNOTATIONS | {
    "/FileAttachment", "/Sound", "/Movie", "/Screen", "/PrinterMark", "/TrapNet", "/Watermark",
    "/3D", "/Redact", "/Projection", "/RichMedia",
}
SLOT_KEYS = {"/A", "/PA", "/NA", "/OpenAction", "/Next"}
MEANINGFUL_KEYS = SLOT_KEYS | {"/Annots", "/Names"}
BANNED_KEYS = {
    "/JS", "/JavaScript", "/EmbeddedFiles", "/EF", "/RF", "/XFA", "/AA", "/OnInstantiate",
    "/Collection", "/NeedsRendering",
}
BANNED_TYPES = {"/EmbeddedFile", "/3D", "/3DRef", "/RichMediaContent", "/RichMediaSettings",
                "/Rendition", "/MediaClip", "/Sound", "/Movie"}
SAFE_URI = re.compile(r"(?i)(https?|mailto):[\x21-\x7e]+")
_CONTAINERS = (pikepdf.Dictionary, pikepdf.Stream, pikepdf.Array)


def _edges(pdf: pikepdf.Pdf) -> Iterator[tuple[str, Any, Any]]:
    """``(key, value, parent)`` for every container in every object the file holds (not only
    reachable ones), nested direct objects included; array elements carry the array's key.

    Indirect objects are all in ``pdf.objects``; one held under a key that gives it a meaning
    (an action slot, ``/Annots``, ``/Names``) is also yielded once under that key.
    """
    roots = [obj for obj in [pdf.trailer, *pdf.objects] if isinstance(obj, _CONTAINERS)]
    stack: list[tuple[str, Any, Any]] = [("", obj, None) for obj in roots]
    seen: set[tuple[int, int, str]] = set()
    while stack:
        key, obj, parent = stack.pop()
        yield key, obj, parent
        if isinstance(obj, pikepdf.Array):
            items = [(key, value) for value in obj]
        else:
            items = [(k, obj.get(k)) for k in obj.keys()]
        for k, v in items:
            if not isinstance(v, _CONTAINERS):
                continue
            if v.is_indirect:
                if k not in MEANINGFUL_KEYS or (*v.objgen, k) in seen:
                    continue
                seen.add((*v.objgen, k))
            stack.append((k, v, obj))


def _is_action(key: str, obj: Any) -> bool:
    if not isinstance(obj, pikepdf.Dictionary):
        return False
    if key in SLOT_KEYS and "/S" in obj:
        return True
    return obj.get("/Type") == Name.Action or str(obj.get("/S", "")) in EVERY_ACTION and not (
        str(obj.get("/Type", "")) in {"/StructElem", "/Catalog", "/Pages", "/Page"})


def findings(pdf: pikepdf.Pdf) -> list[str]:
    """Everything outside the allow-lists, anywhere in the file."""
    found = []
    for key, obj, parent in _edges(pdf):
        if isinstance(obj, pikepdf.Array):
            continue
        found += [f"key {k}" for k in obj.keys() if k in BANNED_KEYS]
        if "/URI" in obj and isinstance(obj.get("/URI"), pikepdf.Dictionary):
            found.append("key /URI (base)")
        if str(obj.get("/Type", "")) in BANNED_TYPES:
            found.append(f"type {obj.get('/Type')}")
        if isinstance(obj, pikepdf.Stream) and obj.get("/Subtype") == Name.PS:
            found.append("PostScript XObject")
        if key == "/Names" and isinstance(parent, pikepdf.Dictionary) and "/Pages" in parent:
            found += [f"name tree {k}" for k in obj.keys() if k not in {"/Dests", "/AP"}]
        if _is_action(key, obj):
            kind = str(obj.get("/S", ""))
            allowed = CHECK_TRIGGER_ACTIONS if key == "/OpenAction" else CHECK_ACTIONS
            if kind not in allowed:
                found.append(f"action {kind or 'none'} in {key or 'object'}")
            elif kind == "/URI":
                uri = obj.get("/URI")
                if not (isinstance(uri, pikepdf.String) and SAFE_URI.fullmatch(str(uri))
                        and bytes(uri) == str(uri).encode("ascii")
                        and "attach" not in str(uri).lower().partition("?")[2]):
                    found.append(f"uri {bytes(uri) if isinstance(uri, pikepdf.String) else uri!r}")
            elif kind == "/Named" and str(obj.get("/N", "")) not in CHECK_NAMED:
                found.append(f"named {obj.get('/N')}")
        subtype = str(obj.get("/Subtype", ""))
        is_annot = (key == "/Annots" or obj.get("/Type") == Name.Annot
                    or subtype in EVERY_ANNOTATION - CHECK_ANNOTATIONS)
        if is_annot and subtype not in CHECK_ANNOTATIONS:
            found.append(f"annotation {subtype or 'none'}")
    return found


def strings_and_streams(pdf: pikepdf.Pdf) -> bytes:
    """Every string and every decoded stream of the file, for searching markers."""
    parts = []
    for _, obj, _ in _edges(pdf):
        if isinstance(obj, pikepdf.Stream):
            try:
                parts.append(obj.read_bytes())
            except pikepdf.PdfError:
                parts.append(obj.read_raw_bytes())
        values = list(obj) if isinstance(obj, pikepdf.Array) else list(obj.values())
        parts += [bytes(v) for v in values if isinstance(v, pikepdf.String)]
    return b"\n".join(parts)
