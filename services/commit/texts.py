"""The commit stage's side of the text transforms: ``file.text_extracted`` and
``file.text_failed`` (docs/transforms.md).

In one transaction, as for every transform (:mod:`services.commit.artefacts`): the event joins
the file's history, its owner, bucket and keys are checked against the file's own, and the
version's ``file_texts`` row is written: the text object's key, size, pages, language and
document information, or the failure's reason; and the first ``SLUICE_TEXT_SEARCH_MAX_CHARS``
characters of the text, which its generated ``tsvector`` column indexes for
``GET /v1/files?q=``. Of two events of one version, the one made later (``occurred_at``) stays.

The file's status never moves: a file is ``available`` once stored and thumbnailed, whatever
its transforms say. An event of a deleted file is dropped (``services.commit.deletion``).
"""

from __future__ import annotations

from services.commit.artefacts import apply_artefact
from shared.events import FileTextExtracted, FileTextFailed
from shared.ports import FileStateWriter


def detail_of(event: FileTextExtracted | FileTextFailed) -> str:
    """The history's line, e.g. ``text (pdftext): 2 pages, 1 by OCR (eng+fra), 812 bytes`` or
    ``no text (pdftext): not a readable PDF: Failed to load document``."""
    if isinstance(event, FileTextFailed):
        return f"no text ({event.transform}): {event.reason}"
    pages = f"{event.pages_read} page{'s' if event.pages_read != 1 else ''}"
    if event.pages_read < event.pages:
        pages += f" of {event.pages}"
    ocr = f", {event.ocr_pages} by OCR ({event.language})" if event.ocr_pages else ""
    if event.transform == "ocr":
        pages, ocr = "image", f" by OCR ({event.language})"
    return f"text ({event.transform}): {pages}{ocr}, {event.text_size_bytes} bytes"


async def apply_text(
    event: FileTextExtracted | FileTextFailed, repository: FileStateWriter, bucket: str
) -> None:
    """Record ``event`` and the version's text (module docstring).

    Raises:
        ForgedEvent: the file is another owner's, or the event names a bucket or key that is
            not the file's own (dead-lettered; nothing is written).
        DatabaseUnavailable: PostgreSQL refused or lost the connection (retried).
    """
    await apply_artefact(
        event, repository, bucket, detail_of(event), lambda tx: tx.record_text(event)
    )
