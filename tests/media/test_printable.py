"""Text shown in the UI keeps no invisible character from a hostile name, and readable names stay as they are."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hub_pipelines.media.printable import printable


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_comes_out_printable(text: str) -> None:
    assert printable(text).isprintable()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(categories=["L", "N", "P", "S"]).filter(str.isprintable)))
def test_printable_text_is_shown_unchanged(text: str) -> None:
    assert printable(text) == text


def test_controls_and_bidi_overrides_are_escaped_as_repr_escapes_them() -> None:
    assert printable("inv\u202egpj.exe\x1b[31m\r\nx\x00") == "inv\\u202egpj.exe\\x1b[31m\\r\\nx\\x00"
