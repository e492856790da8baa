"""The one rule for object keys and listing prefixes, applied by every object store on every call.

A key is 1 to 1024 bytes of UTF-8 (S3's limit), '/'-separated segments, none of them empty, '.' or
'..', and no control character, NUL or backslash. The same rule on both stores means a key that
works locally works on S3, and a hostile key (`../../etc/passwd`, `/abs`, `a\\..\\b`, a NUL) is
refused before it reaches a folder, a URL path or a CDN: SeaweedFS keeps objects in a filer tree,
where `a//b` and `a/./b` name the object `a/b`, and many HTTP layers resolve `..` in a path.
"""

from __future__ import annotations

import re

MAX_KEY_BYTES = 1024
# C0 controls, DEL and the C1 controls: invisible in logs and consoles, and some (CR, LF) split headers.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class InvalidObjectName(ValueError):
    """A bucket name, object key or listing prefix that no object store here accepts."""


def _key_problem(key: str) -> str | None:
    if not key:
        return "it is empty"
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        return "it is not valid UTF-8 (a lone surrogate)"
    if size > MAX_KEY_BYTES:
        return f"it is {size} bytes of UTF-8, more than {MAX_KEY_BYTES}"
    if "\0" in key:
        return "it contains a NUL character"
    control = _CONTROL.search(key)
    if control:
        return f"it contains the control character U+{ord(control.group()):04X}"
    if "\\" in key:
        return "it contains a backslash, which some clients read as a path separator"
    if key.startswith("/"):
        return "it starts with '/'"
    if any(part in ("", ".", "..") for part in key.split("/")):
        return "it has an empty, '.' or '..' segment (a doubled or trailing '/', or a path traversal)"
    return None


def check_object_key(bucket: str, key: str) -> None:
    """Raise InvalidObjectName, naming the bucket, the key and the reason, unless `key` is valid."""
    problem = _key_problem(key)
    if problem:
        raise InvalidObjectName(f"object key {key!r} in bucket {bucket!r} is not valid: {problem}")


def check_key_prefix(bucket: str, prefix: str) -> None:
    """A listing prefix: empty (the whole bucket), or a valid key, or a valid key and a trailing '/'."""
    if not prefix:
        return
    problem = _key_problem(prefix.removesuffix("/"))
    if problem:
        raise InvalidObjectName(f"key prefix {prefix!r} in bucket {bucket!r} is not valid: {problem}")
