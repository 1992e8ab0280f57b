"""The purge of a deleted file's bytes (seed 000: GDPR deletion; docs/gdpr.md).

For a ``file.deleted`` (the owner's ``DELETE /v1/files/{id}``, an erasure, or the commit
stage's answer to a stage event that arrived after the deletion), in this order, each step
idempotent (RabbitMQ: at-least-once delivery):

1. every object of the file in Sluice's bucket: the originals of every version and their
   thumbnails, found by listing the prefix ``{owner}/{file_id}-`` (``shared.naming``: every key
   of the file starts so), not by trusting what PostgreSQL still records, and the copies a
   rescan moved to ``_quarantine/{owner}/{file_id}-``: quarantined objects stay until a person
   removes them, and the owner deleting the file is one;
2. the file's rows in ``fallback_blobs`` (the Base64 originals kept while S3 was down);
3. the file's own spool entries (``spool://<file_id>`` or ``quarantine://<file_id>``, their
   ``.abandoned`` tombstone too), in the backend the event's source names and the configured one.

Nothing is published: the commit stage records the deletion from its own queue. A storage or
database outage raises a retryable error: the run loop retries the message with backoff (and
the stage's circuit breaker waits for S3 or PostgreSQL), so a purge ends with nothing left once
they are back. What a deleted file's history keeps is the commit stage's part
(``services/commit/deletion.py``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from shared.claims import own_spool_entry
from shared.errors import InvalidEvent, StorageUnavailable
from shared.events import BaseEvent, FileDeleted
from shared.naming import quarantine_key, spool_name
from shared.ports import ObjectStore, Spool

log = structlog.get_logger("sluice.purge")


class FallbackRows(Protocol):
    """The fallback table, for removing a deleted file's rows."""

    async def delete_file(self, file_id: uuid.UUID, owner: str) -> int:
        """Delete every row of ``owner``'s file ``file_id``; how many there were.

        Raises:
            DatabaseUnavailable: PostgreSQL refused or lost the connection.
        """
        ...


@dataclass(frozen=True)
class Deps:
    """Sluice's bucket, the fallback rows, the spools (both backends)."""

    storage: ObjectStore
    fallback: FallbackRows
    spool: Spool


@dataclass(frozen=True)
class Purged:
    """What one purge removed: objects (originals and thumbnails), fallback rows, spool
    entries."""

    objects: int
    fallback_rows: int
    spool_entries: int


def object_prefix(owner: str, file_id: uuid.UUID) -> str:
    """The prefix every object key of the file starts with: ``{owner}/{file_id}-``."""
    return f"{owner}/{file_id}-"


async def purge_objects(storage: ObjectStore, owner: str, file_id: uuid.UUID) -> int:
    """Delete every object under :func:`object_prefix`, served or moved to quarantine by a
    rescan (:func:`~shared.naming.quarantine_key` of the prefix); how many were deleted.

    Raises:
        StorageUnavailable: the store did not answer a listing or a deletion.
    """
    prefix = object_prefix(owner, file_id)
    keys = []
    for listed in (prefix, quarantine_key(prefix)):
        try:
            keys += [info.key async for info in storage.list_objects(listed)]
        except (BotoCoreError, ClientError, OSError) as exc:
            raise StorageUnavailable(
                f"cannot list the file's objects: {exc!r}", prefix=listed
            ) from exc
    for key in keys:
        await storage.delete(key)
    return len(keys)


async def purge_spool(spool: Spool, event: BaseEvent) -> int:
    """Delete the file's own spool entries: the one the event's source names (when it is the
    file's own) and, in the configured backend, each version's up to the event's
    (:func:`~shared.naming.spool_name`: ``<file_id>``, ``<file_id>.v2``, ...; a later version
    in flight comes back as a late event, whose ``file.deleted`` names it); how many were
    there."""
    references = {
        spool.reference(spool_name(event.file_id, number))
        for number in range(1, event.version_number + 1)
    }
    if spool.owns(event.source) and own_spool_entry(event):
        references.add(event.source)
    removed = 0
    for reference in sorted(references):
        removed += bool(await spool.delete(reference))
    return removed


async def purge(event: BaseEvent, deps: Deps) -> Purged:
    """Remove every byte of ``event``'s file (module docstring).

    Raises:
        StorageUnavailable: S3 (or the local store, or the quarantine bucket) did not answer.
        DatabaseUnavailable: PostgreSQL did not answer.
    """
    objects = await purge_objects(deps.storage, event.owner, event.file_id)
    rows = await deps.fallback.delete_file(event.file_id, event.owner)
    entries = await purge_spool(deps.spool, event)
    return Purged(objects=objects, fallback_rows=rows, spool_entries=entries)


async def handle(event: BaseEvent, deps: Deps) -> list[BaseEvent]:
    """Purge the deleted file's bytes; nothing to publish.

    Raises:
        InvalidEvent: not a ``file.deleted`` (dead-lettered).
        StorageUnavailable, DatabaseUnavailable: retried with backoff.
    """
    if not isinstance(event, FileDeleted):
        raise InvalidEvent(f"purge does not take {event.type} events", event_id=str(event.event_id))
    done = await purge(event, deps)
    log.info(
        "file purged",
        reason=event.reason,
        objects=done.objects,
        fallback_rows=done.fallback_rows,
        spool_entries=done.spool_entries,
    )
    return []
