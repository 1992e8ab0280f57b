"""Object keys: ``{owner}/{file_id}-{timestamp}-{sanitised original name}`` (seed 000); a
version after the first adds its number, ``{owner}/{file_id}-v{n}-{timestamp}-{name}``.

The name part is made safe for any S3 implementation and any later download: Unicode NFC,
path separators and control characters replaced, leading dots removed (no ``..`` segment, no
hidden file), at most 120 UTF-8 bytes with the extension kept. Keys are deterministic for a
file version, so a redelivered store writes the same key again.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import UTC, datetime

MAX_NAME_BYTES = 120
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|#%{}^~\[\]`]+")
_SPACES = re.compile(r"\s+")


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode(errors="ignore")


def sanitise_name(original: str) -> str:
    """A safe single-segment name for ``original`` (never empty, at most 120 UTF-8 bytes).

    >>> sanitise_name("../../etc/passwd")
    'etc_passwd'
    >>> sanitise_name("photo\\x00.jpg")
    'photo_.jpg'
    """
    name = unicodedata.normalize("NFC", original)
    name = _UNSAFE.sub("_", name)
    name = _SPACES.sub("_", name)
    name = re.sub(r"_+", "_", name)
    name = name.strip("._ ")
    if not name:
        name = "file"
    stem, dot, ext = name.rpartition(".")
    if dot and stem and 0 < len(ext.encode()) <= 16:
        stem = _truncate_utf8(stem, MAX_NAME_BYTES - len(ext.encode()) - 1).rstrip("._ ")
        return f"{stem or 'file'}.{ext}"
    return _truncate_utf8(name, MAX_NAME_BYTES).rstrip("._ ") or "file"


def object_key(
    owner: str,
    file_id: uuid.UUID,
    received_at: datetime,
    original_name: str,
    version_number: int = 1,
) -> str:
    """The original's key: ``{owner}/{file_id}-{YYYYMMDDTHHMMSSZ}-{sanitised name}`` for
    version 1, ``{owner}/{file_id}-v{n}-{YYYYMMDDTHHMMSSZ}-{sanitised name}`` for version
    ``n`` > 1: each version under its own key, even two uploaded in the same second under the
    same name (seed 004: file_id + version_number unique)."""
    stamp = received_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    version = f"-v{version_number}" if version_number > 1 else ""
    return f"{owner}/{file_id}{version}-{stamp}-{sanitise_name(original_name)}"


#: The content types a thumbnail can have, and the extension of its key.
THUMBNAIL_EXTENSIONS = {"image/webp": "webp", "image/jpeg": "jpg"}


def thumbnail_key(original_key: str, size_px: int, content_type: str = "image/webp") -> str:
    """The key of a thumbnail, next to its original: ``{original key}.thumb-{size}.webp``, or
    ``.jpg`` for a JPEG (the 1024 px preview of an opaque image).

    Raises ``KeyError`` for a content type not in :data:`THUMBNAIL_EXTENSIONS`.
    """
    return f"{original_key}.thumb-{size_px}.{THUMBNAIL_EXTENSIONS[content_type]}"


def rendition_key(
    original_key: str, width: int | None, height: int | None, fit: str, extension: str
) -> str:
    """The key of a rendition, next to its original (so the purge of the file's prefix removes
    it): ``{original key}.render-{w}x{h}-{fit}.{extension}``, a missing side written ``auto``.

    >>> rendition_key("o/f-1-a.jpg", 512, None, "contain", "webp")
    'o/f-1-a.jpg.render-512xauto-contain.webp'
    """
    w = "auto" if width is None else str(width)
    h = "auto" if height is None else str(height)
    return f"{original_key}.render-{w}x{h}-{fit}.{extension}"


#: What a text transform's object key adds to its original's (docs/transforms.md).
TEXT_SUFFIX = ".text.txt"


def text_key(original_key: str) -> str:
    """The key of a version's extracted text, next to its original: ``{original key}.text.txt``
    (UTF-8, a form feed between pages). Under the original's ``{owner}/{file_id}-`` prefix, so
    the purge of a deleted file removes it with the rest."""
    return original_key + TEXT_SUFFIX


#: Where a video's HLS rendition lives: under ``{original key}.hls/`` (docs/transforms.md).
HLS_SUFFIX = ".hls/"
#: The HLS master playlist's name under :data:`HLS_SUFFIX`.
HLS_MASTER = "master.m3u8"


def hls_key(original_key: str, name: str) -> str:
    """The key of a file of a video's HLS rendition, next to its original: ``{original
    key}.hls/{name}`` (``master.m3u8``, ``360p.m3u8``, ``360p_00000.ts``). Under the original's
    ``{owner}/{file_id}-`` prefix, so the purge of a deleted file removes them with the rest."""
    return original_key + HLS_SUFFIX + name


def poster_key(original_key: str, size_px: int, content_type: str = "image/webp") -> str:
    """The key of a thumbnail of a video's poster frame: ``{original key}.poster-{size}.webp``,
    or ``.jpg`` (as :func:`thumbnail_key`).

    Raises ``KeyError`` for a content type not in :data:`THUMBNAIL_EXTENSIONS`.
    """
    return f"{original_key}.poster-{size_px}.{THUMBNAIL_EXTENSIONS[content_type]}"


def spool_name(file_id: uuid.UUID, version_number: int = 1) -> str:
    """The spool entry of a file version's upload: ``{file_id}`` for version 1 (as before
    versions existed), ``{file_id}.v{n}`` for version ``n`` > 1, so a new version never
    overwrites a version still in flight."""
    return str(file_id) if version_number == 1 else f"{file_id}.v{version_number}"


def parse_spool_name(name: str) -> tuple[uuid.UUID, int] | None:
    """``(file_id, version_number)`` of a :func:`spool_name`, or ``None`` for any other name."""
    base, dot, version = name.partition(".v")
    try:
        file_id = uuid.UUID(base)
    except ValueError:
        return None
    if not dot:
        return (file_id, 1) if name == str(file_id) else None
    if not version.isascii() or not version.isdigit() or int(version) < 2:
        return None
    if spool_name(file_id, int(version)) != name:
        return None
    return file_id, int(version)


#: Where a rescan moves a version's objects once they are found infected: ``_quarantine/`` then
#: the old key. No owner name starts with ``_`` (``shared.events.Owner``), so no stored key
#: does, and the quarantine cannot be reached by an upload or a presigned URL of a served file.
QUARANTINE_PREFIX = "_quarantine/"


def quarantine_key(key: str) -> str:
    """The key ``key`` is moved to when quarantined, e.g. ``_quarantine/alice/3f…-a.jpg``."""
    return QUARANTINE_PREFIX + key
