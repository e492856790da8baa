"""Published PDFs are inert: every crafted carrier of active content comes out without it, checked
in the rewritten bytes (decompressed), and the removal is reported; "reject" refuses them instead."""

from __future__ import annotations

import io
from collections.abc import Callable

import pikepdf
import pytest

from hub_pipelines.media.pdfs import PdfRejected, optimize_pdf
from tests.media.pdf_hostile import (
    HOSTILE_PDFS,
    MARKER,
    active_traces,
    javascript_in_object_stream,
    plain_link,
    uncompressed,
)


@pytest.mark.parametrize(("name", "build", "categories"), [(n, *v) for n, v in HOSTILE_PDFS.items()],
                         ids=list(HOSTILE_PDFS))  # fmt: skip
def test_active_content_is_gone_from_the_rewritten_bytes_and_reported(
    name: str, build: Callable[[], bytes], categories: set[str]
) -> None:
    original = build()
    assert active_traces(original), "the crafted file must carry what the test removes"

    optimized = optimize_pdf(original, name)

    assert active_traces(optimized.data) == []
    assert set(optimized.active_content_removed) == categories
    with pikepdf.open(io.BytesIO(optimized.data)) as written:
        assert len(written.pages) == 1 and written.is_linearized


def test_script_hidden_in_an_object_stream_is_not_visible_in_the_raw_input() -> None:
    original = javascript_in_object_stream()

    assert b"/JavaScript" not in original and MARKER.encode() not in original
    assert b"/JavaScript" in uncompressed(original)


def test_pdf_without_active_content_keeps_its_links_and_reports_nothing() -> None:
    optimized = optimize_pdf(plain_link(), "links.pdf")

    assert optimized.active_content_removed == {}
    with pikepdf.open(io.BytesIO(optimized.data)) as written:
        (link,) = written.pages[0].Annots
        assert str(link.A.URI) == "https://example.test/"


@pytest.mark.parametrize("name", list(HOSTILE_PDFS))
def test_reject_setting_refuses_a_pdf_with_active_content_naming_it(name: str) -> None:
    build, categories = HOSTILE_PDFS[name]

    with pytest.raises(PdfRejected, match=rf"rejected PDF '{name}': active content \(") as raised:
        optimize_pdf(build(), name, active_content="reject")

    assert all(category in raised.value.reason for category in categories)


def test_reject_setting_still_publishes_an_inert_pdf() -> None:
    assert optimize_pdf(plain_link(), "links.pdf", active_content="reject").active_content_removed == {}
