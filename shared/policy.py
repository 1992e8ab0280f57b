"""The upload policy: which types are accepted, how big, and how a claim is checked.

Seed 000: images (jpg, jpeg, png, gif, webp, heic, heif) up to 10 MB, PDF up to 5 MB, validated
by MIME type **and** extension. Seed 002 (HLS streaming): videos (mp4, m4v, mov, webm) up to
``SLUICE_GATEWAY_MAX_VIDEO_BYTES`` (60 MiB), the same way. Here the MIME type is the one
libmagic sniffs from the first bytes, and it must agree with the file name's extension and with
the part's declared ``Content-Type`` (unless that is absent or the generic
``application/octet-stream``).

One policy for every way in: the gateway applies it while it streams an upload
(``services/gateway/form.py``), and the scan stage applies it again to every ``file.received``
before anything is stored, so a file an upstream service announces meets the same rules
(:meth:`UploadPolicy.check_announced`, then :meth:`UploadPolicy.check` on the sniffed type).
There the content type the event claims is not compared but replaced by the sniffed one.

Everything here is pure (no I/O) apart from :func:`sniff`, which calls libmagic on bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import magic

from shared.errors import PolicyRefusal
from shared.settings import GatewaySettings
from shared.text import visible_name

#: Bytes of the file handed to libmagic; enough for every accepted format's signature.
HEAD_BYTES = 8192
#: Longest original name kept in events, characters (``FileReceived.original_name``).
MAX_NAME_CHARS = 1024
#: Declared types that say nothing about the content; they are not checked.
GENERIC_TYPES = frozenset({"", "application/octet-stream"})

Category = Literal["image", "document", "video"]


@dataclass(frozen=True)
class FileType:
    """One accepted type.

    ``sniffed`` are the MIME types libmagic may report for it; ``declared`` the part
    ``Content-Type`` values a client may claim for it (``sniffed`` plus common aliases).
    """

    name: str
    category: Category
    extensions: frozenset[str]
    sniffed: frozenset[str]
    declared: frozenset[str]
    max_bytes: int

    def accepts_declared(self, declared: str) -> bool:
        """Whether a part ``Content-Type`` (already normalised) fits this type."""
        return declared in self.declared or declared in self.sniffed


def _type(
    name: str,
    category: Category,
    extensions: str,
    sniffed: str,
    max_bytes: int,
    aliases: str = "",
) -> FileType:
    return FileType(
        name=name,
        category=category,
        extensions=frozenset(extensions.split()),
        sniffed=frozenset(sniffed.split()),
        declared=frozenset((sniffed + " " + aliases).split()),
        max_bytes=max_bytes,
    )


@dataclass(frozen=True)
class UploadPolicy:
    """The accepted types and their size limits, from :class:`GatewaySettings`; the largest
    ``metadata`` as compact JSON, bytes."""

    types: tuple[FileType, ...]
    max_metadata_bytes: int = 16 * 1024

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> UploadPolicy:
        """Seed 000's policy with ``max_image_bytes`` and ``max_pdf_bytes`` from settings, and
        the videos of seed 002 with ``max_video_bytes``."""
        image, video = settings.max_image_bytes, settings.max_video_bytes
        return cls(
            types=(
                _type("jpeg", "image", "jpg jpeg", "image/jpeg", image, "image/jpg image/pjpeg"),
                _type("png", "image", "png", "image/png", image, "image/x-png"),
                _type("gif", "image", "gif", "image/gif", image),
                _type("webp", "image", "webp", "image/webp", image),
                _type(
                    "heif",
                    "image",
                    "heic heif",
                    "image/heic image/heif image/heic-sequence image/heif-sequence",
                    image,
                ),
                _type(
                    "pdf",
                    "document",
                    "pdf",
                    "application/pdf",
                    settings.max_pdf_bytes,
                    "application/x-pdf",
                ),
                _type("mp4", "video", "mp4 m4v", "video/mp4", video, "video/x-m4v"),
                _type("mov", "video", "mov", "video/quicktime", video),
                _type("webm", "video", "webm", "video/webm", video),
            ),
            max_metadata_bytes=settings.max_metadata_bytes,
        )

    @property
    def hard_cap_bytes(self) -> int:
        """The largest limit of any type: applies before the type is known, bytes."""
        return max(t.max_bytes for t in self.types)

    @property
    def extensions(self) -> list[str]:
        """Every accepted extension, sorted."""
        return sorted(ext for t in self.types for ext in t.extensions)

    def by_extension(self, filename: str) -> FileType | None:
        """The type the name's extension claims, or ``None`` for an unknown extension."""
        ext = extension_of(filename)
        return next((t for t in self.types if ext in t.extensions), None)

    def by_sniffed(self, mime: str) -> FileType | None:
        """The type whose content libmagic reported as ``mime``, or ``None``."""
        return next((t for t in self.types if mime in t.sniffed), None)

    def limit_bytes(self, filename: str) -> int:
        """The size limit for a file of that name: its type's, else the hard cap, bytes."""
        claimed = self.by_extension(filename)
        return claimed.max_bytes if claimed else self.hard_cap_bytes

    def check(self, filename: str, declared: str | None, sniffed: str) -> FileType:
        """The accepted type of a file, from its name, its part Content-Type and its content.

        Raises:
            PolicyRefusal: ``unsupported_type`` when the extension or the content is outside the
                policy, or the content disagrees with the extension or with a specific declared
                Content-Type; the message says what was sniffed and what was claimed.
        """
        ext = extension_of(filename)
        claimed = self.by_extension(filename)
        actual = self.by_sniffed(sniffed)
        shown_ext = f".{ext}" if ext else "(no extension)"
        if claimed is None:
            raise _unsupported(
                f"file type {shown_ext} is not accepted (content sniffed as {sniffed}); "
                f"accepted: {', '.join(self.extensions)}"
            )
        if actual is None:
            raise _unsupported(
                f"content sniffed as {sniffed}, which is not an accepted type "
                f"(the name claims {shown_ext})"
            )
        if actual is not claimed:
            raise _unsupported(
                f"content sniffed as {sniffed} but the name claims {shown_ext} "
                f"({', '.join(sorted(claimed.sniffed))})"
            )
        normalised = normalise_media_type(declared)
        if normalised not in GENERIC_TYPES and not claimed.accepts_declared(normalised):
            raise _unsupported(
                f"content sniffed as {sniffed} but the part's Content-Type claims {normalised}"
            )
        return claimed

    def check_announced(
        self, original_name: str, size_bytes: int, metadata: Mapping[str, Any]
    ) -> str:
        """Check what an event says of a file before its bytes are read (the scan stage, for
        every ``file.received``); return the name cleaned (:func:`clean_name`).

        The size must be within the limit of the type the name claims (:meth:`limit_bytes`),
        and the metadata, as compact JSON, within ``max_metadata_bytes``. The content is
        checked once read, with :meth:`check` and the type :func:`sniff` reports.

        Raises:
            PolicyRefusal: ``name_too_long`` or ``invalid_request`` for the name, ``too_large``
                for the file or the metadata.
        """
        name = clean_name(original_name)
        limit = self.limit_bytes(name)
        if size_bytes > limit:
            raise PolicyRefusal(
                "too_large",
                f"the file is {size_bytes} bytes, over the limit of {limit} bytes for "
                f"{_shown_extension(name)}",
            )
        meta_bytes = len(compact_json(metadata))
        if meta_bytes > self.max_metadata_bytes:
            raise PolicyRefusal(
                "too_large",
                f"the metadata is {meta_bytes} bytes of JSON, over the limit of "
                f"{self.max_metadata_bytes} bytes",
            )
        return name


def _shown_extension(filename: str) -> str:
    ext = extension_of(filename)
    return f".{ext}" if ext else "(no extension)"


def compact_json(value: Mapping[str, Any]) -> bytes:
    """``value`` as JSON without spaces, UTF-8: what its size limit is measured on."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _unsupported(message: str) -> PolicyRefusal:
    return PolicyRefusal("unsupported_type", message)


def extension_of(filename: str) -> str:
    """The lowercased text after the last ``.`` of the name's last segment, or ``""``.

    >>> extension_of("../photos/IMG_0001.JPG")
    'jpg'
    """
    last = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = last.rpartition(".")
    return ext.strip().lower() if dot and stem.strip(".") else ""


def normalise_media_type(value: str | None) -> str:
    """A Content-Type without parameters, lowercased: ``"Image/JPEG; q=1"`` → ``"image/jpeg"``."""
    return (value or "").split(";", 1)[0].strip().lower()


def clean_name(raw: str) -> str:
    """The original name as kept in events, without the characters of
    :data:`shared.text.INVISIBLE_CATEGORIES` (:func:`shared.text.visible_name`): controls
    (NUL, C0, DEL, C1), format characters (the bidi overrides and isolates U+202A-202E and
    U+2066-2069, zero-width spaces and joiners, the BOM, soft hyphens), line and paragraph
    separators (U+2028, U+2029).

    PostgreSQL ``text`` cannot hold NUL, control characters break logs and headers, and
    invisible or direction-changing ones make a name read as something else:
    ``"invoice\u202egpj.exe"`` shows as ``invoiceexe.jpg`` (Unicode TR #36, bidirectional
    text spoofing) and is kept as ``invoicegpj.exe``, whose extension the policy then refuses.
    Every other character (``/``, ``..``, emoji) is kept, because the name is never used as a
    path (object keys are made by ``shared.naming``). Emoji joined by U+200D come apart into
    their parts.

    Raises:
        PolicyRefusal: ``name_too_long`` above 1024 characters; ``invalid_request`` when
            nothing but removed characters (and spaces) was sent.
    """
    if len(raw) > MAX_NAME_CHARS:
        raise PolicyRefusal("name_too_long", f"file name longer than {MAX_NAME_CHARS} characters")
    name = visible_name(raw)
    if not name:
        raise PolicyRefusal(
            "invalid_request", "the `file` part needs a file name (its extension is checked)"
        )
    return name


def sniff(head: bytes) -> str:
    """The MIME type libmagic reports for the first bytes of a file (``magic.from_buffer``)."""
    return str(magic.from_buffer(head[:HEAD_BYTES], mime=True))
