"""What the text transforms (``services/pdftext``, ``services/ocr``) have in common: the text
object they store beside the original, and the events they answer ``file.stored`` with
(docs/transforms.md; seeds 002 and 003: PDF text, OCR).

The text of a version is one UTF-8 object at ``shared.naming.text_key`` (``{original
key}.text.txt``), its pages separated by a form feed (U+000C), as ``pdftotext`` writes them.
Its key is deterministic and its event id too (UUIDv5 of the ``file.stored`` id and
``file.text_extracted:<transform>``), so a redelivered ``file.stored`` overwrites the same
object and makes the same event, which the commit stage records once.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from shared.adapters import broker
from shared.events import FileStored, FileTextExtracted, FileTextFailed
from shared.naming import text_key
from shared.ports import ObjectStore
from shared.settings import Settings
from shared.topology import Topology

Transform = Literal["pdftext", "ocr"]
#: Between two pages of a text object.
PAGE_BREAK = "\f"
#: The upload metadata key naming the OCR languages of a file, e.g. ``{"ocr_lang": "fra"}``.
OCR_LANG_KEY = "ocr_lang"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
#: The media type the pdftext stage reads.
PDF_TYPE = "application/pdf"
#: The media types the ocr stage reads (seed 000's photo types).
OCR_TYPES = frozenset(
    {"image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "image/heif"}
)

#: The media types the video stage reads (seed 002: HLS streaming; ``shared.policy``'s videos).
VIDEO_TYPES = frozenset({"video/mp4", "video/quicktime", "video/webm"})


def transform_for(content_type: str | None) -> Transform | None:
    """The transform that reads files of ``content_type``: ``pdftext`` for a PDF, ``ocr`` for
    an image of :data:`OCR_TYPES`, ``None`` for anything else."""
    if content_type == PDF_TYPE:
        return "pdftext"
    return "ocr" if content_type in OCR_TYPES else None


@dataclass(frozen=True)
class ExtractedText:
    """What a transform read: one text per page read (``pages_read`` of ``pages``), how many
    of them by OCR, in which languages, and the document's information (PDF)."""

    texts: Sequence[str]
    pages: int
    ocr_pages: int = 0
    language: str | None = None
    document_metadata: Mapping[str, str] = field(default_factory=dict)


def ocr_languages(event: FileStored, default: str) -> str:
    """The OCR languages of ``event``'s file: its upload metadata's ``ocr_lang`` when it is a
    string, else ``default`` (``SLUICE_OCR_DEFAULT_LANG``); not yet checked against what is
    installed (``shared.adapters.tesseract.check_languages``)."""
    value = event.metadata.get(OCR_LANG_KEY)
    return value.strip() if isinstance(value, str) and value.strip() else default


def search_excerpt(text: str, max_chars: int) -> tuple[str, bool]:
    """``(excerpt, truncated)``: ``text`` with its whitespace runs made single spaces, cut to at
    most ``max_chars`` characters at a word boundary when longer (``truncated`` is then True).
    E.g. ``search_excerpt("a  b\\fc", 3) == ("a b", True)``."""
    flat = " ".join(text.split())
    if len(flat) <= max_chars:
        return flat, False
    cut = flat[:max_chars]
    if flat[max_chars] != " " and " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(), True


def event_id_of(event: FileStored, type_: str, transform: Transform) -> uuid.UUID:
    """The deterministic id of ``transform``'s ``type_`` answer to ``event``."""
    return uuid.uuid5(event.event_id, f"{type_}:{transform}")


async def store_text(
    storage: ObjectStore,
    event: FileStored,
    transform: Transform,
    extracted: ExtractedText,
    *,
    search_max_chars: int,
) -> FileTextExtracted:
    """Put the text object of ``event``'s original (overwriting a previous delivery's) and
    return the ``file.text_extracted`` that says so, with the first ``search_max_chars``
    characters of the text for the search index.

    Raises:
        StorageUnavailable: S3 (or the local root) unreachable (retried).
    """
    text = PAGE_BREAK.join(extracted.texts)
    body = text.encode("utf-8", errors="replace")
    key = text_key(event.key)
    digest = hashlib.sha256(body).hexdigest()
    await storage.put_bytes(
        key,
        body,
        sha256_hex=digest,
        content_type=TEXT_CONTENT_TYPE,
        metadata={
            "source-sha256": event.sha256,
            "transform": transform,
            "pages": str(extracted.pages),
            "ocr-pages": str(extracted.ocr_pages),
        },
    )
    excerpt, truncated = search_excerpt(text, search_max_chars)
    return event.follow(
        FileTextExtracted,
        event_id=event_id_of(event, FileTextExtracted.routing_key, transform),
        transform=transform,
        bucket=event.bucket,
        key=event.key,
        text_key=key,
        text_size_bytes=len(body),
        text_sha256=digest,
        pages=extracted.pages,
        pages_read=len(extracted.texts),
        ocr_pages=extracted.ocr_pages,
        language=extracted.language,
        document_metadata=dict(extracted.document_metadata),
        search_text=excerpt,
        search_truncated=truncated,
    )


def text_failed(event: FileStored, transform: Transform, reason: str) -> FileTextFailed:
    """The ``file.text_failed`` of ``transform`` for ``event``'s original, with ``reason``."""
    return event.follow(
        FileTextFailed,
        event_id=event_id_of(event, FileTextFailed.routing_key, transform),
        transform=transform,
        bucket=event.bucket,
        key=event.key,
        reason=reason,
    )


async def bind_transform_queue(settings: Settings, stage: str) -> None:
    """Declare the topology and bind the transform ``stage``'s queue (``pdftext``, ``ocr``,
    ``video``: ``shared.topology.TRANSFORMS``) to ``file.stored``
    (``shared.topology.Topology.bind_transform``), at its worker's start.

    Raises:
        BrokerUnavailable: RabbitMQ unreachable.
    """
    topology = Topology.of(settings.amqp)
    connection = await broker.connect(settings.amqp)
    try:
        channel = await broker.open_channel(connection, settings.amqp)
        await topology.declare(channel)
        await topology.bind_transform(channel, stage)
    finally:
        await connection.close()
