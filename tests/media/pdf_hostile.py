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
    rb"/(JavaScript|JS|AA|Launch|EmbeddedFiles?|FileAttachment|RichMedia\w*|XFA|GoToE)(?=[\s/<>\[\]()]|$)"
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
}
