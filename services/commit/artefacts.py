"""The commit stage's side of a transform's answer (``services.commit.texts``,
``services.commit.videos``; docs/transforms.md).

In one transaction (``FileRepository.transaction``):

1. the event joins the file's history (``event_id`` is the idempotency key; a duplicate changes
   nothing once its owner is checked);
2. its owner is checked against the file's recorded owner (the file's row is made from the
   event if the transform answered before ``file.received`` was recorded), and its bucket and
   key against the file's own (``shared.claims``): a forged event writes nothing;
3. the transform's row is written (``record``), and a mark that the file needed a person is
   cleared, as for any event that shows the file moves again.

The file's status never moves: a file is ``available`` once stored and thumbnailed, whatever
its transforms say. An event of a deleted file is dropped (``services.commit.deletion``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from shared.claims import check_owner, check_stored_object
from shared.events import FileTextExtracted, FileTextFailed, FileVideoFailed, FileVideoProcessed
from shared.ports import FileStateTransaction, FileStateWriter
from shared.status import FileStatus

log = structlog.get_logger("sluice.commit")


#: The events of a transform's answer.
TransformEvent = FileTextExtracted | FileTextFailed | FileVideoProcessed | FileVideoFailed


async def apply_artefact(
    event: TransformEvent,
    repository: FileStateWriter,
    bucket: str,
    detail: str,
    record: Callable[[FileStateTransaction], Awaitable[None]],
) -> None:
    """Record ``event`` with the history line ``detail``, and its row by ``record(tx)``
    (module docstring).

    Raises:
        ForgedEvent: the file is another owner's, or the event names a bucket or key that is
            not the file's own (dead-lettered; nothing is written).
        DatabaseUnavailable: PostgreSQL refused or lost the connection (retried).
    """
    check_stored_object(event, bucket)
    async with repository.transaction(file_id=event.file_id, event_id=event.event_id) as tx:
        if await tx.deleted(event):
            log.info("transform event of a deleted file dropped", event_type=event.type)
            return
        if not await tx.record_event(event, detail):
            check_owner(event, await tx.owner_of(event.file_id))
            log.info("duplicate event; state unchanged")
            return
        lock = await tx.lock_file(event, initial_status=FileStatus.RECEIVED)
        check_owner(event, lock.owner)  # raising rolls back the history row too
        await record(tx)
        if lock.has_attention and await tx.clear_attention(event):
            log.info("attention cleared: the file moves again")
