"""Object keys as paths below a root directory, never outside it (the local storage backend).

An S3 key is any string; a path is not. :func:`key_parts` accepts a key only if it maps to one
file strictly below the bucket directory: relative, ``/``-separated, no empty, ``.`` or ``..``
segment, no NUL or other control character, no backslash, no segment starting with the
backend's reserved prefix ``.sluice-`` (its temporary files and metadata sidecars), segments of
at most :data:`MAX_SEGMENT_BYTES` UTF-8 bytes. Symbolic links are refused where the files are
opened (``shared.adapters.local_storage``), since a string cannot tell.
"""

from __future__ import annotations

import re

from shared.errors import InvalidSource

#: Names the backend keeps for itself inside the bucket directory: never part of a key.
RESERVED_PREFIX = ".sluice-"
#: Longest key segment, UTF-8 bytes: a file name is at most 255 bytes, and the metadata
#: sidecar adds ``.sluice-meta.`` and ``.json`` to it.
MAX_SEGMENT_BYTES = 230
#: Longest key, UTF-8 bytes (S3's limit).
MAX_KEY_BYTES = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def key_parts(key: str) -> tuple[str, ...]:
    """The path segments of ``key``, checked to stay below the bucket directory.

    >>> key_parts("alice/1234-20260101T000000Z-photo.jpg")
    ('alice', '1234-20260101T000000Z-photo.jpg')

    Raises:
        InvalidSource: empty or too long, absolute, a backslash, a NUL or control character, an
            empty, ``.`` or ``..`` segment, a segment over :data:`MAX_SEGMENT_BYTES` bytes or
            starting with :data:`RESERVED_PREFIX`; the message says which, ``context`` holds
            the key (``repr``, so a NUL stays visible).
    """
    problem = _problem(key)
    if problem is not None:
        raise InvalidSource(f"object key not allowed: {problem}", key=repr(key))
    return tuple(key.split("/"))


def _problem(key: str) -> str | None:
    if not key:
        return "empty"
    if len(key.encode("utf-8", errors="surrogatepass")) > MAX_KEY_BYTES:
        return f"longer than {MAX_KEY_BYTES} bytes"
    if key.startswith("/"):
        return "absolute path"
    if "\\" in key:
        return "backslash"
    if _CONTROL.search(key):
        return "NUL or control character"
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            return f"empty, '.' or '..' segment in {key!r}"
        if segment.startswith(RESERVED_PREFIX):
            return f"segment starting with {RESERVED_PREFIX!r} (reserved)"
        if len(segment.encode("utf-8", errors="surrogatepass")) > MAX_SEGMENT_BYTES:
            return f"segment longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def is_safe_key(key: str) -> bool:
    """Whether :func:`key_parts` accepts ``key``."""
    return _problem(key) is None
