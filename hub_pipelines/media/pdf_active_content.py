"""Making a published PDF inert: no script, no launched program, no embedded file, no rich media.

A viewer runs what a PDF asks it to: JavaScript (`/JS` actions, the `/Names` JavaScript tree, `/AA`
triggers on the document, pages, fields and annotations, a script in `/OpenAction`), `/Launch`
actions, embedded files and file attachment annotations (a payload one click away), Flash/3D rich
media and XFA forms (a second, scriptable document inside the first). None of it belongs in a file a
CDN hands to the public, so it is removed, and what was removed is counted per category so the media
record says what the author's file carried.

Links and form actions that reach outside the document are active content too: a link is kept only
when its URI is http(s) or mailto once read as a browser reads it (the string decoded, controls and
spaces dropped: `java\tscript:` is `javascript:`); a form submission or data import (`SubmitForm`,
`ImportData`) would send or load data elsewhere, and a link into another file (`GoToR`, to a UNC path
say) makes a viewer fetch it, handing over the reader's network credentials on the way.

Counts are of elements removed: an action, a trigger (`/AA`) dictionary, an embedded file, an
annotation, an XFA form. The walk visits every object qpdf parsed, object streams included, so a script hidden in a
compressed object stream or reached only by an odd key is found too; actions are recognised by their
`/S` type wherever they sit. Emptied actions are then unlinked, and objects nothing refers to any
more are not written (qpdf writes only what is reachable).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Literal

import pikepdf
from pikepdf import Array, Dictionary, Name

INERT_RULES_VERSION = 3
"""Raised whenever what is removed grows, so staged PDFs made inert under older rules are rendered again
(it is part of the render fingerprint). 2: unsafe links, form submission, remote documents, renditions.
3: actions and annotations held directly in indirect arrays."""

ActiveContentCategory = Literal[
    "javascript",
    "launch",
    "additional_actions",
    "embedded_files",
    "file_attachment_annotations",
    "rich_media",
    "xfa",
    "form_submission",
    "external_documents",
    "unsafe_links",
]

_ACTIONS: dict[Name, ActiveContentCategory] = {
    Name.JavaScript: "javascript",
    Name.Launch: "launch",
    Name.GoToE: "embedded_files",
    Name.RichMediaExecute: "rich_media",
    Name.Rendition: "rich_media",
    Name.Movie: "rich_media",
    Name.Sound: "rich_media",
    Name.SubmitForm: "form_submission",
    Name.ImportData: "form_submission",
    Name.GoToR: "external_documents",
}
_SAFE_URI_SCHEMES = frozenset({"http", "https", "mailto"})
_SCRIPT_URI_SCHEMES = frozenset({"javascript", "vbscript"})
# A browser drops these from a URL before it reads the scheme (WHATWG URL: C0 controls and space at
# the ends, tab and newlines anywhere); dropping them everywhere only ever refuses more.
_URL_IGNORED = re.compile(r"[\x00-\x20\x7f]")
_SCHEME = re.compile(r"([a-z][a-z0-9+.-]*):")
# Screen, Movie, Sound and 3D annotations play media through the same machinery as RichMedia.
_ANNOTATIONS: dict[Name, ActiveContentCategory] = {
    Name.FileAttachment: "file_attachment_annotations",
    Name.RichMedia: "rich_media",
    Name.Screen: "rich_media",
    Name.Movie: "rich_media",
    Name.Sound: "rich_media",
    Name("/3D"): "rich_media",
}
_ACTION_KEYS = (Name.A, Name.OpenAction, Name.PA, Name.Next)


def strip_active_content(pdf: pikepdf.Pdf) -> dict[str, int]:
    """Remove every active element from `pdf` in place; returns how many of each were removed."""
    removed: Counter[ActiveContentCategory] = Counter()
    for obj in pdf.objects:
        if isinstance(obj, Dictionary | pikepdf.Stream):
            _strip_dictionary(obj, removed)
        elif isinstance(obj, Array):
            # An indirect array's direct items (an /Annots or /Next array's) are reached through it alone.
            for item in obj:
                _strip_direct(item, removed)
    for page in pdf.pages:
        _strip_annotations(page.obj, removed)
    _strip_catalog(pdf.Root, removed)
    for obj in pdf.objects:
        if isinstance(obj, Dictionary | pikepdf.Stream):
            _unlink_emptied_actions(obj)
        elif isinstance(obj, Array):
            for item in obj:
                _unlink_in_direct(item)
    return {category: removed[category] for category in sorted(removed)}


def _strip_catalog(root: pikepdf.Object, removed: Counter[ActiveContentCategory]) -> None:
    names = root.get(Name.Names)
    if isinstance(names, Dictionary):
        # The trees' entries (script actions, file specifications) were counted by the walk; a
        # tree whose entries were not recognised still counts once.
        trees: tuple[tuple[Name, ActiveContentCategory], ...] = (
            (Name.JavaScript, "javascript"),
            (Name.EmbeddedFiles, "embedded_files"),
        )
        for tree, category in trees:
            if tree in names:
                del names[tree]
                removed[category] = removed[category] or 1
    for key in (Name.Collection, Name.AF):
        if key in root:
            del root[key]
            removed["embedded_files"] += 1
    form = root.get(Name.AcroForm)
    if isinstance(form, Dictionary) and Name.XFA in form:
        del form[Name.XFA]
        removed["xfa"] += 1
    if Name.NeedsRendering in root:
        del root[Name.NeedsRendering]


def _strip_annotations(page: pikepdf.Object, removed: Counter[ActiveContentCategory]) -> None:
    annotations = page.get(Name.Annots)
    if not isinstance(annotations, Array):
        return
    kept = []
    for annotation in annotations:
        subtype = _direct_name(annotation.get(Name.Subtype)) if isinstance(annotation, Dictionary) else None
        category = _ANNOTATIONS.get(subtype) if subtype is not None else None
        if category:
            removed[category] += 1
        else:
            kept.append(annotation)
    if len(kept) != len(annotations):
        page[Name.Annots] = Array(kept)


def _strip_dictionary(dictionary: pikepdf.Object, removed: Counter[ActiveContentCategory]) -> None:
    """Strip one dictionary and the direct dictionaries and arrays inside it."""
    category = _action_category(dictionary)
    if category:
        removed[category] += 1
        for key in list(dictionary.keys()):
            del dictionary[key]
        return
    if Name.AA in dictionary:
        del dictionary[Name.AA]
        removed["additional_actions"] += 1
    if Name.JS in dictionary:
        del dictionary[Name.JS]
        removed["javascript"] += 1
    if Name.EF in dictionary:
        del dictionary[Name.EF]
        removed["embedded_files"] += 1
    for key in list(dictionary.keys()):
        _strip_direct(dictionary[key], removed)


def _strip_direct(value: pikepdf.Object, removed: Counter[ActiveContentCategory]) -> None:
    # Indirect objects are visited on their own by the walk over pdf.objects.
    if isinstance(value, Dictionary) and not value.is_indirect:
        _strip_dictionary(value, removed)
    elif isinstance(value, Array) and not value.is_indirect:
        for item in value:
            _strip_direct(item, removed)


def _action_category(dictionary: pikepdf.Object) -> ActiveContentCategory | None:
    kind = _direct_name(dictionary.get(Name.S))
    if kind is None:
        return None
    if kind == Name.URI:
        return _uri_category(dictionary.get(Name.URI))
    return _ACTIONS.get(kind)


def _direct_name(value: object) -> Name | None:
    """The name, made direct: a name may be an indirect object (`/S 5 0 R`), which cannot be hashed."""
    return Name(str(value)) if isinstance(value, Name) else None


def _uri_category(target: object) -> ActiveContentCategory | None:
    """None for a link a browser opens as an http(s) or mailto URL; what it is otherwise."""
    if not isinstance(target, pikepdf.String):
        return "unsafe_links"
    scheme = _SCHEME.match(_URL_IGNORED.sub("", str(target)).lower())
    if scheme is None or scheme.group(1) not in _SAFE_URI_SCHEMES:
        return "javascript" if scheme and scheme.group(1) in _SCRIPT_URI_SCHEMES else "unsafe_links"
    return None


def _unlink_emptied_actions(dictionary: pikepdf.Object) -> None:
    for key in _ACTION_KEYS:
        value = dictionary.get(key)
        if isinstance(value, Dictionary) and len(value.keys()) == 0:
            del dictionary[key]
        elif key == Name.Next and isinstance(value, Array) and value.is_indirect:
            # Changed in place: whoever else refers to the chain sees it without the emptied actions.
            for index in reversed(range(len(value))):
                if _emptied(value[index]):
                    del value[index]
        elif key == Name.Next and isinstance(value, Array):
            kept = [item for item in value if not _emptied(item)]
            if len(kept) != len(value):
                dictionary[key] = Array(kept)
    for name in list(dictionary.keys()):
        _unlink_in_direct(dictionary[name])


def _emptied(item: pikepdf.Object) -> bool:
    return isinstance(item, Dictionary) and len(item.keys()) == 0


def _unlink_in_direct(value: pikepdf.Object) -> None:
    if isinstance(value, Dictionary) and not value.is_indirect:
        _unlink_emptied_actions(value)
    elif isinstance(value, Array) and not value.is_indirect:
        for item in value:
            _unlink_in_direct(item)
