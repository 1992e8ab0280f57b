"""The commit stage's part of a deletion (seed 000: GDPR deletion; docs/gdpr.md).

``file.deleted`` makes the file ``deleted`` (terminal) and removes what PostgreSQL knew of it,
in ONE transaction under the file's history lock (``shared.history``):

- ``file_versions`` rows go (names in keys, sizes, SHA-256, thumbnails);
- ``file_events`` rows go (every payload copy of the file's name and metadata); the history
  then holds one row, ``file.deleted``, numbered after the last one, whose payload names only
  the event, the file and when;
- the ``files`` row stays, as a tombstone with status ``deleted`` and no name, type, kind,
  metadata, reason or attention, so a late stage event is recognised and dropped;
- for an erasure (``reason="erasure"``), or a file of an owner erased since it was received
  (``gdpr_erasures``), nothing of the file stays at all, not even that row.

A stage event that arrives for a file already deleted (one that was in flight: its scan, store
or thumbnail was still running) is dropped unrecorded, and answered with a ``file.deleted``
(``reason="late_event"``), so the purge worker removes again whatever bytes that stage wrote
after the first purge. The check runs under the same history lock as the deletion, so an event
is either recorded before the deletion (and removed by it) or dropped after it.
"""

from __future__ import annotations

from typing import Any, Final

import structlog

from shared.adapters.db import FORGOTTEN
from shared.claims import check_owner
from shared.erasure import owner_digest
from shared.events import (
    BaseEvent,
    FileCommitted,
    FileDeadLettered,
    FileDeadLetterPurged,
    FileDeleted,
)
from shared.history import CHANNEL, HISTORY_LOCK_SEED
from shared.ports import FileStateWriter
from shared.status import FileStatus

log = structlog.get_logger("sluice.commit")

#: The history row's ``detail``: only that a deletion happened.
DELETED_DETAIL: Final = "deleted"

#: Events that only note something about a file (no stage wrote bytes): dropped without a
#: new purge.
_NOTICES: Final = (FileCommitted, FileDeadLettered, FileDeadLetterPurged, FileDeleted)

_LOCK_HISTORY = "SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text, $2))"

_ERASED = "SELECT EXISTS (SELECT 1 FROM gdpr_erasures WHERE owner_sha256 = $1 AND started_at >= $2)"

_LOCK_FILE = "SELECT owner, status FROM files WHERE file_id = $1 FOR UPDATE"

_NEXT_SEQ = "SELECT COALESCE(max(seq), 0) + 1 FROM file_events WHERE file_id = $1"

_TOMBSTONE_FILE = """
INSERT INTO files (file_id, owner, original_name, content_type, kind, metadata, status,
                   status_reason, current_version, received_at, attention)
VALUES ($1, $2, '', 'application/octet-stream', NULL, '{}'::jsonb, $3, NULL, 1, $4, NULL)
ON CONFLICT (file_id) DO UPDATE SET
    original_name = '', content_type = 'application/octet-stream', kind = NULL,
    metadata = '{}'::jsonb, status = EXCLUDED.status, status_reason = NULL, attention = NULL,
    updated_at = now()
"""

_RECORD_DELETION = """
WITH inserted AS (
    INSERT INTO file_events (event_id, file_id, version_number, event_type, causation_id,
                             occurred_at, detail, payload, seq)
    VALUES ($1, $2, 1, $3, NULL, $4, $7, $8::jsonb, $5)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING file_id, seq
)
SELECT pg_notify($6, json_build_object('file_id', file_id, 'seq', seq)::text) FROM inserted
"""


def history_payload(event: FileDeleted) -> dict[str, Any]:
    """What the history keeps of a deletion: the event's type and id, the file, when, and why;
    no name, type, size, SHA-256 or metadata."""
    return {
        "type": event.type,
        "event_id": str(event.event_id),
        "file_id": str(event.file_id),
        "occurred_at": event.occurred_at.isoformat(),
        "reason": event.reason,
    }


async def is_deleted(connection: Any, event: BaseEvent) -> bool:
    """Whether ``event``'s file is deleted, waits for its deletion (a gateway tombstone in
    ``file_deletions``), or belongs to an owner erased since it was received. The caller holds
    the file's history lock (until the transaction ends), as a deletion does
    (``FileTransaction.deleted`` takes it first)."""
    deleted: bool = await connection.fetchval(
        FORGOTTEN,
        event.file_id,
        owner_digest(event.owner),
        event.received_at,
        str(FileStatus.DELETED),
    )
    return deleted


async def delete_file(connection: Any, event: FileDeleted) -> bool:
    """Apply ``event`` to the file's rows (module docstring); ``False`` when it was already
    deleted (a duplicate, or a late event's purge) and nothing changed.

    Raises:
        ForgedEvent: the file is recorded with another owner (nothing is written).
    """
    await connection.execute(_LOCK_HISTORY, event.file_id, HISTORY_LOCK_SEED)
    row = await connection.fetchrow(_LOCK_FILE, event.file_id)
    check_owner(event, None if row is None else row["owner"])
    erased = await connection.fetchval(_ERASED, owner_digest(event.owner), event.received_at)
    # What the text transforms read (migration 0012), for a deletion as for an erasure.
    await connection.execute("DELETE FROM file_texts WHERE file_id = $1", event.file_id)
    # What the video transform made (migration 0013): its objects go with the file's purge.
    await connection.execute("DELETE FROM file_videos WHERE file_id = $1", event.file_id)
    if event.reason == "erasure" or erased:
        await connection.execute("DELETE FROM file_events WHERE file_id = $1", event.file_id)
        await connection.execute("DELETE FROM files WHERE file_id = $1", event.file_id)
        await connection.execute("DELETE FROM file_deletions WHERE file_id = $1", event.file_id)
        return row is not None
    if row is not None and row["status"] == FileStatus.DELETED:
        return False
    seq = await connection.fetchval(_NEXT_SEQ, event.file_id)
    await connection.execute("DELETE FROM file_versions WHERE file_id = $1", event.file_id)
    await connection.execute("DELETE FROM file_events WHERE file_id = $1", event.file_id)
    await connection.execute(
        _TOMBSTONE_FILE, event.file_id, event.owner, str(FileStatus.DELETED), event.received_at
    )
    await connection.execute(
        _RECORD_DELETION,
        event.event_id,
        event.file_id,
        event.type,
        event.occurred_at,
        seq,
        CHANNEL,
        DELETED_DETAIL,
        history_payload(event),
    )
    return True


async def handle_deleted(event: FileDeleted, repository: FileStateWriter) -> list[BaseEvent]:
    """Record ``event`` (module docstring); nothing to publish: the purge worker takes the same
    ``file.deleted`` from its own queue.

    Raises:
        ForgedEvent: the file is recorded with another owner (dead-lettered).
        DatabaseUnavailable: PostgreSQL refused or lost the connection (retried).
    """
    async with repository.transaction(file_id=event.file_id, event_id=event.event_id) as tx:
        if await tx.delete_file(event):
            log.info("file deleted", reason=event.reason)
        else:
            log.info("already deleted; state unchanged", reason=event.reason)
    return []


def dropped(event: BaseEvent) -> list[BaseEvent]:
    """The answer to ``event``, which arrived for a deleted file and is not recorded: a
    ``file.deleted`` (``late_event``) for the purge worker, unless ``event`` is a notice."""
    if isinstance(event, _NOTICES):
        log.info("event for a deleted file dropped")
        return []
    log.info("stage event for a deleted file dropped; its bytes are purged again")
    return [event.follow(FileDeleted, reason="late_event", erasure_id=None)]
