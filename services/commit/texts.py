"""The commit stage's side of the text transforms: ``file.text_extracted`` and
``file.text_failed`` (docs/transforms.md).

In one transaction (``FileRepository.transaction``):

1. the event joins the file's history (``event_id`` is the idempotency key);
2. its owner is checked against the file's recorded owner (the file's row is made from the
   event if the transform answered before ``file.received`` was recorded), and its bucket and
   keys against the file's own (``shared.claims``): a forged event writes nothing;
3. the version's ``file_texts`` row is written: the text object's key, size, pages, language
   and document information, or the failure's reason; and the first
   ``SLUICE_TEXT_SEARCH_MAX_CHARS`` characters of the text, which its generated ``tsvector``
   column indexes for ``GET /v1/files?q=``. Of two events of one version, the one made later
   (``occurred_at``) stays.

The file's status never moves: a file is ``available`` once stored and thumbnailed, whatever
its transforms say. An event of a deleted file is dropped (``services.commit.deletion``).
"""

from __future__ import annotations

import structlog

from shared.claims import check_owner, check_stored_object
from shared.events import FileTextExtracted, FileTextFailed
from shared.ports import FileStateWriter
from shared.status import FileStatus

log = structlog.get_logger("sluice.commit")


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
    check_stored_object(event, bucket)
    async with repository.transaction(file_id=event.file_id, event_id=event.event_id) as tx:
        if await tx.deleted(event):
            log.info("text of a deleted file dropped")
            return
        if not await tx.record_event(event, detail_of(event)):
            check_owner(event, await tx.owner_of(event.file_id))
            log.info("duplicate event; state unchanged")
            return
        lock = await tx.lock_file(event, initial_status=FileStatus.RECEIVED)
        check_owner(event, lock.owner)  # raising rolls back the history row too
        await tx.record_text(event)
        if await tx.clear_attention(event):
            log.info("attention cleared: the file moves again")
