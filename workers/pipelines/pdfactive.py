"""Active content in a PDF: keep what is known to be inert, remove everything else.

An allow-list, not a deny-list: an action, annotation or name tree survives only if its type is
listed below; anything else (including types this module has never heard of) is removed and
labelled in the returned set, which becomes ``removed`` in info.json.

- Actions: ``GoTo``; ``URI`` whose target is ``http``, ``https`` or ``mailto``; ``Named`` with a
  standard page-navigation name. Automatic triggers are stricter: ``/OpenAction`` keeps only
  ``GoTo`` and ``Named`` (a link fetched on open is a web beacon) and ``/AA`` goes whole.
- Annotations: markup and links (``ALLOWED_ANNOTATIONS``); ``Widget`` stays, stripped of its
  actions, so that filled-in forms still show their values.
- Name trees: ``Dests`` and ``AP`` only.

Where actions hide: every object reachable from the trailer is walked, and the decisions are
taken on each edge (a parent inspects its children), so an object reached twice is judged in
each place, and nesting (outline items, form ``/Kids``, ``/Next`` chains, direct dictionaries
inside direct dictionaries) cannot hide anything. Besides the action slots (``/A``, ``/PA``,
``/NA``, ``/OpenAction``, ``/Next``), any dictionary that names a known action type in ``/S`` or
says ``/Type /Action`` is judged as an action wherever it sits. Labels use a closed vocabulary
(unknown names become ``other``), so a hostile file cannot grow info.json with names of its own.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import pikepdf

ALLOWED_ACTIONS = frozenset({"/GoTo", "/URI", "/Named"})
# Actions an automatic trigger (``/OpenAction``) may run: navigation only.
ALLOWED_TRIGGER_ACTIONS = frozenset({"/GoTo", "/Named"})
STANDARD_NAMED_ACTIONS = frozenset({"/NextPage", "/PrevPage", "/FirstPage", "/LastPage"})
SAFE_URI_SCHEMES = frozenset({"http", "https", "mailto"})
ALLOWED_ANNOTATIONS = frozenset({
    "/Text", "/Link", "/FreeText", "/Line", "/Square", "/Circle", "/Polygon", "/PolyLine",
    "/Highlight", "/Underline", "/Squiggly", "/StrikeOut", "/Caret", "/Ink", "/Popup", "/Stamp",
    "/Widget",
})
ALLOWED_NAME_TREES = frozenset({"/Dests", "/AP"})

# Vocabularies for labels (PDF 2.0 plus the Adobe extensions); anything else is ``other``.
KNOWN_ACTIONS = frozenset({
    "/GoTo", "/GoToR", "/GoToE", "/GoToDp", "/Launch", "/Thread", "/URI", "/Sound", "/Movie",
    "/Hide", "/Named", "/SubmitForm", "/ResetForm", "/ImportData", "/JavaScript",
    "/SetOCGState", "/Rendition", "/Trans", "/GoTo3DView", "/RichMediaExecute",
})
KNOWN_ANNOTATIONS = ALLOWED_ANNOTATIONS | {
    "/FileAttachment", "/Sound", "/Movie", "/Screen", "/PrinterMark", "/TrapNet", "/Watermark",
    "/3D", "/Redact", "/Projection", "/RichMedia",
}
KNOWN_NAME_TREES = ALLOWED_NAME_TREES | {
    "/JavaScript", "/Pages", "/Templates", "/IDS", "/URLS", "/EmbeddedFiles",
    "/AlternatePresentations", "/Renditions",
}
_LABELLED_SCHEMES = frozenset({"javascript", "vbscript", "file", "data", "ftp", "smb"})
_SKELETON = frozenset({"/StructElem", "/Catalog", "/Pages", "/Page"})

# Keys holding an action (or the head of a chain), besides ``/OpenAction``. ``/Next`` is also
# an outline item's sibling, which has no ``/S`` and so is no action.
ACTION_KEYS = frozenset({"/A", "/PA", "/NA", "/Next"})
# Keys removed wherever they appear, with their label. ``/AA`` (automatic triggers) also has
# the actions it held labelled.
REMOVED_KEYS = {
    "/AA": "trigger:AA",
    "/JS": "script:JS",
    "/OnInstantiate": "script:OnInstantiate",
    "/JavaScript": "names:JavaScript",
    "/EmbeddedFiles": "names:EmbeddedFiles",
    "/EF": "file:embedded",
    "/RF": "file:embedded",
    "/XFA": "form:XFA",
    "/NeedsRendering": "form:XFA",
    "/Collection": "catalog:Collection",
}

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")
_BOMS = ((b"\xfe\xff", "utf-16-be"), (b"\xff\xfe", "utf-16-le"), (b"\xef\xbb\xbf", "utf-8"))
# WHATWG URL parsing drops leading and trailing C0 controls and spaces, as browsers do.
_URL_STRIP = "".join(chr(c) for c in range(0x21))

# Walk roles: how the children of a visited container are judged. ``_TRIGGER`` is an action
# run by ``/OpenAction`` (its ``/Next`` is held to the trigger allow-list too); the chain roles
# are ``/Next`` arrays, whose elements are actions.
_GENERIC, _ANNOTS, _NAMES = "", "annots", "names"
_TRIGGER, _CHAIN, _TRIGGER_CHAIN = "trigger", "chain", "trigger-chain"
_LEAF = "leaf"  # a number, name or string: kept, nothing to walk
_CONTAINERS = (pikepdf.Dictionary, pikepdf.Stream, pikepdf.Array)


def classify_uri(value: Any) -> tuple[str | None, str]:
    """Judge a ``/URI`` action's target: ``(None, normalized)`` when it may stay, else
    ``(label, "")`` with ``label`` one of the scheme names, ``unc``, ``relative`` or ``invalid``.

    The PDF string is decoded (a UTF-16 or UTF-8 byte-order mark honoured, PDFDocEncoding
    read as Latin-1), stripped of leading and trailing controls and spaces as browsers do,
    and must then be printable 7-bit ASCII (the spec's encoding for URIs): a tab, newline or
    NUL inside (``java\\tscript:``) makes it ``invalid``. A target with no scheme resolves
    against ``/Base`` or the file's own location (``file:`` when opened locally), so it goes;
    ``\\\\host\\share`` and ``//host`` are UNC or scheme-relative: ``unc``. A ``mailto``
    asking for an attachment is ``mailto-attach``.
    """
    if not isinstance(value, pikepdf.String):
        return "invalid", ""
    raw = bytes(value)
    try:
        text = next((raw[len(bom):].decode(codec) for bom, codec in _BOMS if raw.startswith(bom)),
                    None)
    except UnicodeDecodeError:
        return "invalid", ""
    text = (raw.decode("latin-1") if text is None else text).strip(_URL_STRIP)
    if not _PRINTABLE_ASCII.fullmatch(text):
        return "invalid", ""
    if text[:2] in ("//", "\\\\", "/\\", "\\/"):
        return "unc", ""
    match = _SCHEME.match(text)
    if match is None:
        return "relative", ""
    scheme = match.group(1).lower()
    if scheme not in SAFE_URI_SCHEMES:
        return (scheme if scheme in _LABELLED_SCHEMES else "other"), ""
    if scheme == "mailto" and _asks_for_attachment(text):
        return "mailto-attach", ""
    return None, text


def _asks_for_attachment(mailto: str) -> bool:
    """``mailto:?attach=/etc/passwd``: some mail clients attach the named local file."""
    query = mailto.partition("?")[2]
    names = (unquote(pair.partition("=")[0]).strip().lower() for pair in query.split("&"))
    return any(name.startswith("attach") for name in names)


def _name(obj: Any, key: str) -> str | None:
    value = obj.get(key)
    return str(value) if isinstance(value, pikepdf.Name) else None


def _known(name: str | None, vocabulary: frozenset[str]) -> str:
    if name is None:
        return "none"
    return name[1:] if name in vocabulary else "other"


def _is_structure(obj: Any) -> bool:
    """A structure element (whose ``/S`` is its role) or a node of the document's skeleton:
    never unlinked as an action, which would drop pages; its keys are judged as usual."""
    return _name(obj, "/Type") in _SKELETON or ("/P" in obj and "/K" in obj)


def _looks_like_action(obj: Any, in_slot: bool) -> bool:
    """An action slot holds an action whenever the dictionary has ``/S``; elsewhere a
    dictionary is an action if it says so or names a known action type (a structure element's
    ``/S`` is its role, not an action)."""
    if not isinstance(obj, pikepdf.Dictionary):
        return False
    if _name(obj, "/Type") == "/Action":
        return True
    if in_slot:
        return "/S" in obj
    return _name(obj, "/S") in KNOWN_ACTIONS and not _is_structure(obj)


def _action_verdict(action: Any, trigger: bool) -> str | None:
    """None when the action may stay; else its label (``""`` when it is allowed in a link but
    not in an automatic trigger: the trigger's own label says what went). A kept ``URI`` is
    written back stripped, in the form it was judged in."""
    kind = _name(action, "/S")
    if kind == "/URI":
        target = action.get("/URI")
        scheme, text = classify_uri(target)
        if scheme is not None:
            return f"action:URI({scheme})"
        if bytes(target) != text.encode("ascii"):  # keep it in the form it was judged in
            action.URI = pikepdf.String(text)
    elif kind == "/Named" and _name(action, "/N") not in STANDARD_NAMED_ACTIONS:
        return "action:Named"
    if kind not in ALLOWED_ACTIONS:
        return f"action:{_known(kind, KNOWN_ACTIONS)}"
    if trigger and kind not in ALLOWED_TRIGGER_ACTIONS:
        return ""
    return None


class _Removals:
    """The labels of what was removed, and the chains already described (each once)."""

    def __init__(self) -> None:
        self.labels: set[str] = set()
        self._described: set[tuple[int, int]] = set()

    def add(self, label: str) -> None:
        if label:
            self.labels.add(label)

    def describe_chain(self, head: Any) -> None:
        """Label the actions of a chain that goes with what holds it (each indirect action is
        described once per document, so shared chains cost nothing more)."""
        stack = [head]
        while stack:
            node = stack.pop()
            if isinstance(node, pikepdf.Array):
                stack.extend(node)
                continue
            if not isinstance(node, pikepdf.Dictionary):
                if node is not None:
                    self.add("action:other")
                continue
            if node.is_indirect:
                if node.objgen in self._described:
                    continue
                self._described.add(node.objgen)
            self.add(_action_verdict(node, trigger=False) or "")
            if "/Next" in node:
                stack.append(node.get("/Next"))


def _keep_action(action: Any, trigger: bool, removals: _Removals) -> bool:
    """Judge one action in a slot; a removed one takes its ``/Next`` chain with it (those
    actions are labelled when they are not on the allow-list)."""
    verdict = _action_verdict(action, trigger)
    if verdict is None:
        return True
    removals.add(verdict)
    if trigger:
        removals.add("trigger:OpenAction")
    if "/Next" in action:
        removals.describe_chain(action.get("/Next"))
    return False


def _remove_annotation(annot: Any, removals: _Removals) -> None:
    """Label a removed annotation: its subtype, the actions it carried, a 3D script."""
    removals.add(f"annotation:{_known(_name(annot, '/Subtype'), KNOWN_ANNOTATIONS)}")
    for key in ACTION_KEYS:
        if _looks_like_action(annot.get(key), in_slot=True):  # a Movie's /A is a flag
            removals.describe_chain(annot.get(key))
    triggers = annot.get("/AA")
    if isinstance(triggers, pikepdf.Dictionary):
        for key in triggers.keys():
            removals.describe_chain(triggers.get(key))
    scene = annot.get("/3DD")
    if isinstance(scene, (pikepdf.Dictionary, pikepdf.Stream)):
        inner = scene.get("/3DD")  # a 3D reference dictionary points at the stream
        if "/OnInstantiate" in scene or (
                isinstance(inner, pikepdf.Stream) and "/OnInstantiate" in inner):
            removals.add("script:OnInstantiate")


def _is_annotation(obj: Any, in_annots: bool) -> bool:
    if not isinstance(obj, pikepdf.Dictionary):
        return False
    if in_annots or _name(obj, "/Type") == "/Annot":
        return True
    subtype = _name(obj, "/Subtype")
    return subtype in KNOWN_ANNOTATIONS and subtype not in ALLOWED_ANNOTATIONS


def _judge_value(value: Any, role: str, removals: _Removals) -> str | None:
    """Judge a child found in a container visited in ``role``: None to remove it, else the
    role to walk it in."""
    if not isinstance(value, _CONTAINERS):
        return _LEAF
    if role in (_CHAIN, _TRIGGER_CHAIN):  # the elements of an action's /Next array
        if not _looks_like_action(value, in_slot=True):
            return _GENERIC
        trigger = role == _TRIGGER_CHAIN
        return (_TRIGGER if trigger else _GENERIC) if _keep_action(
            value, trigger, removals) else None
    if _is_annotation(value, role == _ANNOTS) and not (
            role != _ANNOTS and _name(value, "/Type") in _SKELETON):
        if _name(value, "/Subtype") in ALLOWED_ANNOTATIONS:
            return _GENERIC
        _remove_annotation(value, removals)
        return None
    if _looks_like_action(value, in_slot=False):
        return _GENERIC if _keep_action(value, False, removals) else None
    if isinstance(value, pikepdf.Stream):
        if _name(value, "/Type") == "/EmbeddedFile":
            removals.add("file:embedded")
            return None
        if _name(value, "/Subtype") == "/PS":  # a PostScript XObject, passed to printers
            removals.add("xobject:PS")
            return None
    return _GENERIC


def _judge_key(obj: Any, role: str, key: str, value: Any, removals: _Removals) -> str | None:
    """Judge the child under ``key`` of a dictionary visited in ``role``: None to remove it,
    else the role to walk it in."""
    if role == _NAMES and key not in ALLOWED_NAME_TREES:
        removals.add(f"names:{_known(key, KNOWN_NAME_TREES)}")
        return None
    if key in REMOVED_KEYS:
        removals.add(REMOVED_KEYS[key])
        if key == "/AA" and isinstance(value, pikepdf.Dictionary):
            for trigger in value.keys():
                removals.describe_chain(value.get(trigger))
        return None
    if key == "/URI" and isinstance(value, pikepdf.Dictionary):
        removals.add("catalog:URI")  # the document's /Base for relative links
        return None
    if key == "/Ref" and isinstance(obj, pikepdf.Stream) and _name(obj, "/Subtype") == "/Form":
        removals.add("xobject:Ref")  # a reference XObject: a page of another file
        return None
    in_trigger = key == "/OpenAction" or (key == "/Next" and role == _TRIGGER)
    if key == "/Next" and isinstance(value, pikepdf.Array):
        return _TRIGGER_CHAIN if in_trigger else _CHAIN
    if (key in ACTION_KEYS or key == "/OpenAction") and _looks_like_action(value, in_slot=True):
        if not _keep_action(value, in_trigger, removals):
            return None
        return _TRIGGER if in_trigger else _GENERIC
    if key == "/Names" and isinstance(value, pikepdf.Dictionary):
        return _NAMES  # the catalog's name dictionary (tree leaves hold arrays)
    if key == "/Annots" and isinstance(value, pikepdf.Array):
        return _ANNOTS
    return _judge_value(value, _GENERIC, removals)


def _walk_dictionary(obj: Any, role: str, removals: _Removals) -> list[tuple[Any, str]]:
    children: list[tuple[Any, str]] = []
    for key in list(obj.keys()):
        value = obj.get(key)
        child_role = _judge_key(obj, role, key, value, removals)
        if child_role is None:
            del obj[key]
        elif child_role != _LEAF:
            children.append((value, child_role))
    return children


def _walk_array(obj: Any, role: str, removals: _Removals) -> list[tuple[Any, str]]:
    children: list[tuple[Any, str]] = []
    for index in reversed(range(len(obj))):
        value = obj[index]
        child_role = _judge_value(value, role, removals)
        if child_role is None:
            del obj[index]
        elif child_role != _LEAF:
            children.append((value, child_role))
    return children


def strip_active_content(pdf: pikepdf.Pdf) -> set[str]:
    """Remove everything not on the allow-lists from all that is reachable from the trailer
    and from each page (qpdf may have rebuilt the page tree); return the labels of what went.

    Linear in the size of the document: an explicit stack, not recursion, so deep nesting
    cannot exhaust Python's recursion limit; an indirect object is walked once per role (the
    roles are few), which also breaks reference cycles such as ``/Parent`` links; direct
    objects cannot form cycles. Everything is changed in place, never copied, so a chain
    shared by many links is judged once and written once.
    """
    removals = _Removals()
    seen: set[tuple[int, int, str]] = set()
    stack: list[tuple[Any, str]] = [(page.obj, _GENERIC) for page in reversed(pdf.pages)]
    stack.append((pdf.trailer, _GENERIC))
    while stack:
        obj, role = stack.pop()
        if isinstance(obj, pikepdf.Array):
            walk = _walk_array
        elif isinstance(obj, (pikepdf.Dictionary, pikepdf.Stream)):
            walk = _walk_dictionary
        else:
            continue
        if obj.is_indirect:
            if (*obj.objgen, role) in seen:
                continue
            seen.add((*obj.objgen, role))
        stack.extend(walk(obj, role, removals))
    return removals.labels
