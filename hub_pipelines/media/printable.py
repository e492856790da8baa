"""Text shown to people (failure descriptions, metadata, logs) with nothing invisible left in it.

A hostile object key or file name can carry control characters (an ANSI escape recolouring a
console, a CR rewriting a log line) or invisible formatting (U+202E flips `gpj.exe` to read as
`exe.jpg`). Names are shown with `repr` (quoted, every non-printable character escaped); free text
that may quote an input, such as a decoder's message, goes through `printable`.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with each character Python does not call printable escaped as `repr` would (`\\x1b`)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
