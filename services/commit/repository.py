"""The SQL of the commit stage: ``files``, ``file_versions`` and ``file_events`` (asyncpg).

One :class:`FileTransaction` per handled event; every write of a file first takes the lock on its
``files`` row (:meth:`FileTransaction.lock_file`), so two events of the same file are applied one
after the other even when they are handled at the same time. The lock returns the file's
recorded owner, which the handler compares with the event's; every ``UPDATE files`` also
matches ``file_id`` AND ``owner``, so an event of another owner changes nothing of the file.
Connection failures become :class:`~shared.errors.DatabaseUnavailable` (retryable) carrying
``file_id`` and ``event_id``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any

from services.commit import deletion
from shared.adapters.db import CONNECTION_ERRORS, DATA_ERRORS
from shared.errors import DatabaseUnavailable, InvalidData
from shared.events import (
    BaseEvent,
    FileDeleted,
    FileTextExtracted,
    FileTextFailed,
    FileVideoFailed,
    FileVideoProcessed,
)
from shared.history import CHANNEL, HISTORY_LOCK_SEED
from shared.ports import FileLock, StageFields
from shared.status import MOVING

# Taken before an event is numbered, held until the transaction ends: the next number of a file
# is read only once the previous holder has committed (or rolled back), so numbers never repeat
# and a number becomes visible only after every smaller one. Every transaction of the commit
# stage takes it before the ``files`` row lock (record_event comes first), so no lock cycle.
_LOCK_HISTORY = "SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text, $2))"

# The row and its notice in one statement; the notice is sent only if the transaction commits
# (shared.history: the payload is the file id and the number, nothing else).
_INSERT_EVENT = """
WITH inserted AS (
    INSERT INTO file_events (event_id, file_id, version_number, event_type, causation_id,
                             occurred_at, detail, payload, seq)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb,
            (SELECT COALESCE(max(seq), 0) + 1 FROM file_events WHERE file_id = $2))
    ON CONFLICT (event_id) DO NOTHING
    RETURNING file_id, seq
)
SELECT seq, pg_notify($9, json_build_object('file_id', file_id, 'seq', seq)::text)
FROM inserted
"""

_INSERT_FILE = """
INSERT INTO files (file_id, owner, original_name, content_type, kind, metadata, status,
                   current_version, received_at)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9)
ON CONFLICT (file_id) DO NOTHING
"""

_LOCK_FILE = """
SELECT current_version, owner, status, attention IS NOT NULL AS has_attention
FROM files WHERE file_id = $1 FOR UPDATE
"""

# A separate statement, run once the lock is held: in READ COMMITTED a new statement sees what
# the previous lock holder committed, whereas a row joined into the locking SELECT would come
# from that statement's older snapshot (PostgreSQL docs, "Transaction Isolation": only the
# locked row is re-checked).
_VERSION_STATUS = "SELECT status FROM file_versions WHERE file_id = $1 AND version_number = $2"

_UPSERT_VERSION = """
INSERT INTO file_versions (file_id, version_number, status, size_bytes, sha256, source,
                           bucket, object_key, scanner, signature_version, thumbnails,
                           thumbnail_error, rejection_reason, signature,
                           original_name, content_type, received_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, COALESCE($11::jsonb, '[]'::jsonb),
        $12, $13, $14, $15, $16, $17)
ON CONFLICT (file_id, version_number) DO UPDATE SET
    status            = EXCLUDED.status,
    bucket            = COALESCE(EXCLUDED.bucket, file_versions.bucket),
    object_key        = COALESCE(EXCLUDED.object_key, file_versions.object_key),
    scanner           = COALESCE(EXCLUDED.scanner, file_versions.scanner),
    signature_version = COALESCE(EXCLUDED.signature_version, file_versions.signature_version),
    thumbnails        = COALESCE($11::jsonb, file_versions.thumbnails),
    thumbnail_error   = COALESCE(EXCLUDED.thumbnail_error, file_versions.thumbnail_error),
    rejection_reason  = COALESCE(EXCLUDED.rejection_reason, file_versions.rejection_reason),
    signature         = COALESCE(EXCLUDED.signature, file_versions.signature),
    original_name     = COALESCE(file_versions.original_name, EXCLUDED.original_name),
    content_type      = CASE WHEN $18 -- file.received: a claim the scan stage replaces
                             THEN COALESCE(file_versions.content_type, EXCLUDED.content_type)
                             ELSE EXCLUDED.content_type END,
    received_at       = COALESCE(file_versions.received_at, EXCLUDED.received_at),
    updated_at        = now()
"""

# The file's kind and metadata are its own: set when its row is made, then changed only by
# file.updated (services/commit/edits.py), never by a stage event (which would undo an edit).
# Its name too, but for one case: when another version becomes the current one, the file takes
# that version's name if the version was received after the last edit (the newer of the two
# wins), so the name keeps the current version's extension. SET expressions read the row as it
# was, so ``current_version`` there is the old one. The content type is the current version's.
_UPDATE_FILE = """
UPDATE files SET status = $2, status_reason = $3, current_version = $4, content_type = $5,
                 original_name = CASE
                     WHEN current_version <> $4 AND (edited_at IS NULL OR edited_at < $7)
                     THEN $8 ELSE original_name END,
                 updated_at = now()
WHERE file_id = $1 AND owner = $6
"""


class FileTransaction:
    """The writes of one event, inside one PostgreSQL transaction (the
    :class:`~shared.ports.FileStateTransaction` port)."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._history_locked: set[uuid.UUID] = set()

    async def _lock_history(self, file_id: uuid.UUID) -> None:
        """Take the file's history lock (:data:`_LOCK_HISTORY`), once per transaction: it is
        held until the transaction ends, so a second request would only cost a round trip."""
        if file_id not in self._history_locked:
            await self._connection.execute(_LOCK_HISTORY, file_id, HISTORY_LOCK_SEED)
            self._history_locked.add(file_id)

    async def record_event(self, event: BaseEvent, detail: str) -> bool:
        """Add ``event`` to the history; ``False`` if its ``event_id`` is already there.

        ``payload`` is the event as JSON; ``event_id`` is the idempotency key. A new row gets
        the file's next ``seq`` (1, 2, 3, …, under a per-file advisory lock held until the
        transaction ends) and a ``NOTIFY`` on :data:`shared.history.CHANNEL` with
        ``{"file_id", "seq"}``, delivered when the transaction commits.
        """
        await self._lock_history(event.file_id)
        inserted = await self._connection.fetchval(
            _INSERT_EVENT,
            event.event_id,
            event.file_id,
            event.version_number,
            event.type,
            event.causation_id,
            event.occurred_at,
            detail,
            event.model_dump(mode="json"),
            CHANNEL,
        )
        return inserted is not None

    async def event_payload(self, event_id: uuid.UUID) -> dict[str, Any] | None:
        """The recorded JSON of event ``event_id``, or ``None`` if it was never recorded."""
        payload: dict[str, Any] | None = await self._connection.fetchval(
            "SELECT payload FROM file_events WHERE event_id = $1", event_id
        )
        return payload

    async def owner_of(self, file_id: uuid.UUID) -> str | None:
        """The file's recorded owner, or ``None`` if it has no ``files`` row."""
        owner: str | None = await self._connection.fetchval(
            "SELECT owner FROM files WHERE file_id = $1", file_id
        )
        return owner

    async def lock_file(self, event: BaseEvent, initial_status: str) -> FileLock:
        """Lock the ``files`` row, creating it first if missing (from the event's description);
        the lock says the file's recorded owner, which may not be the event's.

        The lock is held until the transaction ends; it serialises every writer of the file.
        Most events find the row made by an earlier one: they lock it in one statement, and
        only a file's first event also inserts it (then locks it).
        """
        locked = await self._connection.fetchrow(_LOCK_FILE, event.file_id)
        if locked is None:
            await self._connection.execute(
                _INSERT_FILE,
                event.file_id,
                event.owner,
                event.original_name,
                event.content_type,
                event.kind,
                event.metadata,
                initial_status,
                event.version_number,
                event.received_at,
            )
            locked = await self._connection.fetchrow(_LOCK_FILE, event.file_id)
        version_status = await self._connection.fetchval(
            _VERSION_STATUS, event.file_id, event.version_number
        )
        return FileLock(
            current_version=locked["current_version"],
            version_status=version_status,
            owner=locked["owner"],
            file_status=locked["status"],
            has_attention=locked["has_attention"],
        )

    async def upsert_version(self, event: BaseEvent, status: str, fields: StageFields) -> None:
        """Write the ``file_versions`` row of the event's version (seed 004: file_id +
        version_number unique): size, SHA-256, source, name and time of receipt from the event
        on creation, ``status``, its content type (any event's but ``file.received``, whose
        type is a claim the scan stage replaces), and each non-``None`` column of ``fields``."""
        await self._connection.execute(
            _UPSERT_VERSION,
            event.file_id,
            event.version_number,
            status,
            event.size_bytes,
            event.sha256,
            event.source,
            fields.bucket,
            fields.object_key,
            fields.scanner,
            fields.signature_version,
            fields.thumbnails,
            fields.thumbnail_error,
            fields.rejection_reason,
            fields.signature,
            event.original_name,
            event.content_type,
            event.received_at,
            event.type == "file.received",
        )

    async def set_attention(self, event: BaseEvent, attention: dict[str, Any]) -> None:
        """Mark ``event``'s file, if it is of ``event``'s owner, as needing a person
        (``files.attention``, a JSON object holding at least ``failed_at``, ISO 8601)."""
        await self._connection.execute(_SET_ATTENTION, event.file_id, attention, event.owner)

    async def clear_attention(self, event: BaseEvent) -> bool:
        """Clear the attention of ``event``'s file if ``event`` shows it moves again: made after
        the failure, or the dead-lettered event itself; whether it was cleared."""
        result: str = await self._connection.execute(
            _CLEAR_ATTENTION, event.file_id, event.occurred_at, str(event.event_id), event.owner
        )
        return result != "UPDATE 0"

    async def update_file(self, event: BaseEvent, status: str, status_reason: str | None) -> None:
        """Make the event's version the file's current one, with ``status`` and its reason,
        and its content type. Kind and metadata stay (only ``file.updated`` edits them); the
        name becomes the version's when the current version changes to one received after the
        last edit."""
        await self._connection.execute(
            _UPDATE_FILE,
            event.file_id,
            status,
            status_reason,
            event.version_number,
            event.content_type,
            event.owner,
            event.received_at,
            event.original_name,
        )

    async def apply_edit(self, event: BaseEvent, fields: Collection[str]) -> bool:
        """Set the ``fields`` (of ``original_name``, ``kind``, ``metadata``) of ``event``'s
        file, of ``event``'s owner, to the event's values, unless a newer edit was applied
        (``files.edited_at``); whether it was applied."""
        result: str = await self._connection.execute(
            _APPLY_EDIT,
            event.file_id,
            event.owner,
            event.occurred_at,
            "original_name" in fields,
            event.original_name,
            "kind" in fields,
            event.kind,
            "metadata" in fields,
            event.metadata,
        )
        return result != "UPDATE 0"

    async def record_text(self, event: FileTextExtracted | FileTextFailed) -> None:
        """Write the ``file_texts`` row of ``event``'s version (migration 0012), unless one
        written from an event made later is there."""
        text: tuple[Any, ...]
        if isinstance(event, FileTextExtracted):
            text = (
                "extracted",
                event.text_key,
                event.text_size_bytes,
                event.text_sha256,
                event.pages,
                event.ocr_pages,
                event.language,
                dict(event.document_metadata),
                None,
                event.search_text,
                event.search_truncated,
            )
        else:
            text = ("failed", None, None, None, None, None, None, {}, event.reason, "", False)
        await self._connection.execute(
            _UPSERT_TEXT,
            event.file_id,
            event.version_number,
            event.owner,
            event.transform,
            *text,
            event.event_id,
            event.occurred_at,
        )

    async def record_video(self, event: FileVideoProcessed | FileVideoFailed) -> None:
        """Write the ``file_videos`` row of ``event``'s version (migration 0013), unless one
        written from an event made later is there."""
        video: tuple[Any, ...]
        if isinstance(event, FileVideoProcessed):
            video = (
                "processed",
                event.master_key,
                event.duration_s,
                event.width,
                event.height,
                event.video_codec,
                event.has_audio,
                event.segment_s,
                [r.model_dump(mode="json") for r in event.renditions],
                [p.model_dump(mode="json") for p in event.poster],
                None,
            )
        else:
            video = ("failed", None, None, None, None, None, None, None, [], [], event.reason)
        await self._connection.execute(
            _UPSERT_VIDEO,
            event.file_id,
            event.version_number,
            event.owner,
            *video,
            event.event_id,
            event.occurred_at,
        )

    async def deleted(self, event: BaseEvent) -> bool:
        """Whether ``event``'s file is deleted or waits for its deletion (``services.commit.
        deletion.is_deleted``); takes the file's history lock."""
        await self._lock_history(event.file_id)
        return await deletion.is_deleted(self._connection, event)

    async def delete_file(self, event: FileDeleted) -> bool:
        """Apply the deletion ``event`` (``services.commit.deletion.delete_file``).

        Raises:
            ForgedEvent: the file is recorded with another owner.
        """
        return await deletion.delete_file(self._connection, event)


_APPLY_EDIT = """
UPDATE files SET original_name = CASE WHEN $4 THEN $5 ELSE original_name END,
                 kind          = CASE WHEN $6 THEN $7 ELSE kind END,
                 metadata      = CASE WHEN $8 THEN $9::jsonb ELSE metadata END,
                 edited_at = $3, updated_at = now()
WHERE file_id = $1 AND owner = $2 AND (edited_at IS NULL OR edited_at < $3)
"""

_UPSERT_TEXT = """
INSERT INTO file_texts (file_id, version_number, owner, transform, state, text_key, size_bytes,
                        sha256, pages, ocr_pages, language, document_metadata, error,
                        search_text, search_truncated, event_id, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14, $15, $16, $17)
ON CONFLICT (file_id, version_number) DO UPDATE
SET transform = EXCLUDED.transform, state = EXCLUDED.state, text_key = EXCLUDED.text_key,
    size_bytes = EXCLUDED.size_bytes, sha256 = EXCLUDED.sha256, pages = EXCLUDED.pages,
    ocr_pages = EXCLUDED.ocr_pages, language = EXCLUDED.language,
    document_metadata = EXCLUDED.document_metadata, error = EXCLUDED.error,
    search_text = EXCLUDED.search_text, search_truncated = EXCLUDED.search_truncated,
    event_id = EXCLUDED.event_id, occurred_at = EXCLUDED.occurred_at
WHERE file_texts.owner = EXCLUDED.owner AND file_texts.occurred_at <= EXCLUDED.occurred_at
"""

_UPSERT_VIDEO = """
INSERT INTO file_videos (file_id, version_number, owner, state, master_key, duration_s, width,
                         height, video_codec, has_audio, segment_s, renditions, poster, error,
                         event_id, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13::jsonb, $14, $15, $16)
ON CONFLICT (file_id, version_number) DO UPDATE
SET state = EXCLUDED.state, master_key = EXCLUDED.master_key, duration_s = EXCLUDED.duration_s,
    width = EXCLUDED.width, height = EXCLUDED.height, video_codec = EXCLUDED.video_codec,
    has_audio = EXCLUDED.has_audio, segment_s = EXCLUDED.segment_s,
    renditions = EXCLUDED.renditions, poster = EXCLUDED.poster, error = EXCLUDED.error,
    event_id = EXCLUDED.event_id, occurred_at = EXCLUDED.occurred_at
WHERE file_videos.owner = EXCLUDED.owner AND file_videos.occurred_at <= EXCLUDED.occurred_at
"""

_SET_ATTENTION = """
UPDATE files SET attention = $2::jsonb, updated_at = now() WHERE file_id = $1 AND owner = $3
"""

# Cleared by an event made after the failure (a replayed stage answered), or by the
# dead-lettered event itself being recorded (a replayed commit went through); an event made
# before the failure and recorded late does not hide it.
_CLEAR_ATTENTION = """
UPDATE files SET attention = NULL, updated_at = now()
WHERE file_id = $1 AND owner = $4 AND attention IS NOT NULL
  AND ((attention->>'failed_at')::timestamptz < $2 OR attention->>'event_id' = $3)
"""


_COUNT_STUCK = """
SELECT count(*) FILTER (WHERE attention IS NOT NULL) AS attention,
       count(*) FILTER (WHERE attention IS NULL) AS late
FROM files
WHERE attention IS NOT NULL
   OR (status = ANY($1::text[]) AND received_at < now() - make_interval(secs => $2))
"""


class FileRepository:
    """File state in PostgreSQL, over an asyncpg pool (:func:`shared.adapters.db.create_pool`):
    the :class:`~shared.ports.FileStateWriter` port."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(
        self, *, file_id: uuid.UUID, event_id: uuid.UUID
    ) -> AsyncIterator[FileTransaction]:
        """One transaction on a pooled connection: committed when the block ends normally,
        rolled back when it raises.

        Raises:
            DatabaseUnavailable: PostgreSQL refused or lost the connection (see
                :data:`CONNECTION_ERRORS`); ``context`` has ``file_id`` and ``event_id``.
            InvalidData: PostgreSQL refused a value (see :data:`DATA_ERRORS`): permanent, so
                the message is dead-lettered at once instead of retried.
        """
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                yield FileTransaction(connection)
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(
                f"PostgreSQL unavailable: {exc!r}", file_id=str(file_id), event_id=str(event_id)
            ) from exc
        except DATA_ERRORS as exc:
            raise InvalidData(
                f"PostgreSQL refused a value: {exc!r}", file_id=str(file_id), event_id=str(event_id)
            ) from exc

    async def count_stuck(self, older_than_s: float) -> tuple[int, int]:
        """``(attention, late)``: files one of whose messages waits in a dead-letter queue, and
        the other files still moving (:data:`shared.status.MOVING`) received more than
        ``older_than_s`` seconds ago (``sluice doctor`` lists them).

        Raises:
            DatabaseUnavailable: PostgreSQL refused or lost the connection.
        """
        try:
            row = await self._pool.fetchrow(
                _COUNT_STUCK, sorted(str(s) for s in MOVING), older_than_s
            )
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc
        return int(row["attention"]), int(row["late"])

    async def close(self) -> None:
        """Close the pool, waiting for connections in use to be released."""
        await self._pool.close()
