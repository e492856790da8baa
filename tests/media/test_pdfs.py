"""PDF optimization over generated documents: plain, image-heavy, encrypted, damaged and not a PDF."""

from __future__ import annotations

import io
import re
from typing import Any

import pikepdf
import pytest
from pikepdf import Array, Dictionary, Name, PdfImage

from hub_pipelines.media.pdfs import PdfRejected, optimize_pdf
from tests.media.corpus import encode, photo_like


def save(pdf: pikepdf.Pdf, **options: Any) -> bytes:
    buffer = io.BytesIO()
    pdf.save(buffer, **options)
    return buffer.getvalue()


def text_pdf(pages: int = 3) -> pikepdf.Pdf:
    pdf = pikepdf.new()
    font = pdf.make_indirect(Dictionary(Type=Name.Font, Subtype=Name.Type1, BaseFont=Name.Helvetica))
    for number in range(pages):
        page = pdf.add_blank_page(page_size=(612, 792))
        page.Resources = Dictionary(Font=Dictionary(F1=font))
        lines = "".join(
            f"BT /F1 11 Tf 72 {720 - 14 * i} Td (Page {number} line {i}: lorem ipsum) Tj ET\n"
            for i in range(40)
        )
        # Uncompressed on purpose, so that recompression has something to do.
        page.Contents = pdf.make_stream(lines.encode())
    return pdf


def image_pdf() -> bytes:
    """One letter-size page showing a 2400x1600 photo across 8 inches: 300 DPI."""
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(612, 792))
    photo = pdf.make_stream(
        encode(photo_like(2400, 1600), "JPEG", quality=90),
        Type=Name.XObject,
        Subtype=Name.Image,
        Width=2400,
        Height=1600,
        ColorSpace=Name.DeviceRGB,
        BitsPerComponent=8,
        Filter=Name.DCTDecode,
    )
    page.Resources = Dictionary(XObject=Dictionary(Im0=photo))
    page.Contents = pdf.make_stream(b"q 576 0 0 384 18 300 cm /Im0 Do Q")
    return save(pdf)


def test_plain_pdf_comes_out_linearized_smaller_and_with_its_pages() -> None:
    original = save(text_pdf(), compress_streams=False, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    result = optimize_pdf(original, "plain.pdf")
    assert result.bytes_before == len(original) and result.bytes_after == len(result.data)
    assert result.bytes_after < result.bytes_before
    assert result.pages == 3 and not result.repaired
    with pikepdf.open(io.BytesIO(result.data)) as written:
        assert written.is_linearized
        assert len(written.pages) == 3
        assert b"Page 2 line 39" in written.pages[2].Contents.read_bytes()


def test_image_heavy_pdf_shrinks_when_images_are_downsampled() -> None:
    original = image_pdf()
    kept = optimize_pdf(original, "brochure.pdf")
    downsampled = optimize_pdf(original, "brochure.pdf", downsample_images_dpi=100)
    assert kept.images_downsampled == 0 and downsampled.images_downsampled == 1
    assert downsampled.bytes_after < kept.bytes_after * 0.5
    with pikepdf.open(io.BytesIO(downsampled.data)) as written:
        assert written.is_linearized
        (stream,) = written.pages[0].get_images().values()
        assert isinstance(stream, pikepdf.Stream)
        image = PdfImage(stream)
        # 100 DPI over the page's 8.5 inch width: 850 px, aspect ratio kept.
        assert (image.width, image.height) == (850, 567)
        assert image.as_pil_image().size == (850, 567)


def test_image_already_below_the_target_dpi_is_left_alone() -> None:
    result = optimize_pdf(image_pdf(), "brochure.pdf", downsample_images_dpi=250)
    assert result.images_downsampled == 0


def test_password_protected_pdf_is_rejected_as_encrypted() -> None:
    locked = save(text_pdf(1), encryption=pikepdf.Encryption(user="secret", owner="owner"))
    with pytest.raises(PdfRejected, match=r"'locked.pdf'.*encrypted.*password"):
        optimize_pdf(locked, "locked.pdf")


def test_pdf_with_only_an_owner_password_is_rejected_as_encrypted() -> None:
    restricted = save(
        text_pdf(1),
        encryption=pikepdf.Encryption(user="", owner="owner", allow=pikepdf.Permissions(extract=False)),
    )
    with pytest.raises(PdfRejected, match=r"'restricted.pdf'.*encrypted.*owner password"):
        optimize_pdf(restricted, "restricted.pdf")


def test_broken_xref_is_repaired_and_reported() -> None:
    intact = save(text_pdf(2), object_stream_mode=pikepdf.ObjectStreamMode.disable)
    found = re.search(rb"startxref\s+(\d+)", intact)
    assert found is not None
    offset = int(found.group(1))
    broken = intact[:offset] + b"xref\n0 3\ngarbage here\n" + intact[offset + 40 :]
    with pytest.raises(pikepdf.PdfError):
        pikepdf.open(io.BytesIO(broken), attempt_recovery=False)
    result = optimize_pdf(broken, "damaged.pdf")
    assert result.repaired and result.pages == 2
    with pikepdf.open(io.BytesIO(result.data)) as written:
        assert written.is_linearized and len(written.pages) == 2


@pytest.mark.parametrize(
    "data",
    [b"this is not a pdf at all\n" * 10, b"%PDF-1.7\n" + bytes(range(256)) * 8],
    ids=["text", "pdf-header-then-garbage"],
)
def test_garbage_is_rejected_with_the_reason(data: bytes) -> None:
    with pytest.raises(PdfRejected, match=r"rejected PDF 'junk.pdf': (not a PDF|no pages)"):
        optimize_pdf(data, "junk.pdf")


def test_page_drawn_from_several_content_streams_keeps_all_of_them() -> None:
    pdf = text_pdf(1)
    first = pdf.pages[0]
    first.Contents = Array([pdf.make_stream(b"BT /F1 11 Tf 72 700 Td (split) Tj ET"), first.Contents])
    result = optimize_pdf(save(pdf), "split.pdf")
    with pikepdf.open(io.BytesIO(result.data)) as written:
        contents = written.pages[0].Contents
        assert b"(split)" in b"".join(stream.read_bytes() for stream in contents)


def test_pdf_whose_repaired_rewrite_cannot_be_reopened_is_rejected_naming_it() -> None:
    # A mangled trailer (/Size glued to a non-ASCII byte) sends qpdf into reconstruction; it opens
    # the file and writes a linearized copy whose page tree root has no /Kids.
    original = save(text_pdf(), compress_streams=False, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    size = re.search(rb"trailer << /Root 1 0 R /Size (\d+)", original)
    assert size is not None
    mangled = original.replace(b"/Size " + size.group(1), b"/Size\xc0" + size.group(1))

    with pytest.raises(
        PdfRejected, match=r"rejected PDF 'glued.pdf': the rewritten file cannot be reopened: "
    ):
        optimize_pdf(mangled, "glued.pdf")
