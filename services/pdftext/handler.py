"""The pdftext stage: ``file.stored`` of a PDF → the text of each page →
``file.text_extracted`` (seeds 002 and 003: PDF text; docs/transforms.md).

The text layer of each page is read with PDFium (``services.pdftext.extract``); a page with
none (a scan) is rendered and read by Tesseract, in the languages of the upload's metadata
``ocr_lang`` or ``SLUICE_OCR_DEFAULT_LANG``. Files that are not PDFs pass through with no event
(not applicable). A PDF that cannot be read (corrupt, truncated, encrypted, OCR past its time)
gets ``file.text_failed`` with the reason, never a dead letter: the file stays ``available``.

As every stage reading an original, it first checks the event's claim (``shared.claims``) and
the bytes' SHA-256. A redelivered ``file.stored`` is read again and overwrites the same object
(``shared.naming.text_key``) with the same event id: the commit stage records it once.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

from services.pdftext.extract import extract_pdf
from shared.adapters import tesseract
from shared.claims import check_stored_object
from shared.errors import InvalidEvent, TextError
from shared.events import BaseEvent, FileStored
from shared.originals import read_original
from shared.ports import ObjectStore
from shared.transform_settings import OcrSettings, PdfTextSettings
from shared.transforms import PDF_TYPE, ocr_languages, store_text, text_failed


@dataclass(frozen=True)
class Deps:
    """What the pdftext stage works through."""

    storage: ObjectStore
    settings: PdfTextSettings
    ocr: OcrSettings
    #: Tesseract's installed language data, read at start.
    languages: frozenset[str]
    #: One PDF at a time in this process (PDFium is not thread-safe).
    pdfium: asyncio.Lock
    #: ``SLUICE_TEXT_SEARCH_MAX_CHARS``.
    search_max_chars: int


async def handle(event: BaseEvent, deps: Deps) -> list[BaseEvent]:
    """Read the text of a stored PDF; return its ``file.text_extracted`` or
    ``file.text_failed`` (nothing for a file that is not a PDF).

    Raises:
        InvalidEvent: not a ``file.stored`` event.
        ForgedEvent: another bucket, or a key not the file's own (``shared.claims``).
        ChecksumMismatch: the object read back does not hash to the event's SHA-256.
        SourceMissing: the original is not in the bucket.
        StorageUnavailable: S3 down (retried).
    """
    if not isinstance(event, FileStored):
        raise InvalidEvent(f"pdftext stage does not take {event.type}")
    check_stored_object(event, deps.storage.bucket)
    if event.content_type != PDF_TYPE:
        return []
    try:
        languages = tesseract.check_languages(
            ocr_languages(event, deps.ocr.default_lang), deps.languages
        )
    except TextError as exc:
        return [text_failed(event, "pdftext", str(exc))]
    data = await read_original(deps.storage, event)
    ocr = functools.partial(
        tesseract.read_text,
        languages=languages,
        timeout_s=deps.ocr.timeout_s,
        max_pixels=deps.ocr.max_pixels,
    )
    extract = functools.partial(
        extract_pdf,
        data,
        max_pages=deps.settings.max_pages,
        max_ocr_pages=deps.settings.max_ocr_pages,
        render_dpi=deps.settings.render_dpi,
        ocr=ocr,
        language=languages,
    )
    try:
        async with deps.pdfium:
            extracted = await asyncio.to_thread(extract)
    except TextError as exc:
        return [text_failed(event, "pdftext", str(exc))]
    stored = await store_text(
        deps.storage, event, "pdftext", extracted, search_max_chars=deps.search_max_chars
    )
    return [stored]
