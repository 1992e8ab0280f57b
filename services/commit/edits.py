"""The commit stage's side of ``PATCH /v1/files/{id}``: applying ``file.updated``.

The gateway never writes file state; it publishes ``file.updated`` with the new values and the
names of the fields they replace, and waits for this stage to record it (docs/files-api.md §
Edits). In one transaction (``FileRepository.transaction``):

1. the event joins the file's history (``event_id`` is the idempotency key: a redelivered edit
   changes nothing twice);
2. its owner is checked against the file's recorded owner (an edit of another owner's file, or
   of a file not recorded, is :class:`~shared.errors.ForgedEvent`, dead-lettered with nothing
   written);
3. the named fields are set, unless an edit made later (``occurred_at``) was applied already:
   edits that arrive out of order after a retry keep the newest. The status never moves.

An edit of a file deleted (or waiting for its deletion, or of an erased owner) is dropped
before anything else: a deleted file's name and metadata never come back (docs/gdpr.md).
"""

from __future__ import annotations

import structlog

from shared.claims import check_owner
from shared.errors import ForgedEvent
from shared.events import FileUpdated
from shared.ports import FileStateWriter

log = structlog.get_logger("sluice.commit")


def detail_of(event: FileUpdated) -> str:
    """The history's line for an edit, e.g. ``updated: original_name, kind``."""
    return "updated: " + ", ".join(event.fields)


async def apply_update(event: FileUpdated, repository: FileStateWriter) -> None:
    """Record ``event`` and set the fields it names on its file.

    Raises:
        ForgedEvent: the file is not recorded, or not the event's owner's (dead-lettered).
        DatabaseUnavailable: PostgreSQL refused or lost the connection (retried).
    """
    async with repository.transaction(file_id=event.file_id, event_id=event.event_id) as tx:
        if await tx.deleted(event):  # a deleted file's name and metadata never come back
            log.info("edit of a deleted file dropped")
            return
        owner = await tx.owner_of(event.file_id)
        if owner is None:
            raise ForgedEvent(
                "file.updated is about a file that is not recorded",
                file_id=str(event.file_id),
                event_id=str(event.event_id),
            )
        check_owner(event, owner)
        if not await tx.record_event(event, detail_of(event)):
            log.info("duplicate event; state unchanged")
            return
        if await tx.apply_edit(event, event.fields):
            log.info("file edited", fields=list(event.fields))
        else:
            log.info("a newer edit is applied already; this one only joins the history")
