"""The SQL of the fallback worker: ``fallback_blobs`` (asyncpg).

One row per file version (primary key ``file_id, version_number``): a redelivered dead letter
inserts nothing twice. Rows are migrated one at a time, each under its own row lock taken with
``FOR UPDATE SKIP LOCKED`` (PostgreSQL docs, "The Locking Clause"), so several fallback workers
never migrate the same row at once, and a worker that dies mid-migration releases its lock
with its connection. Connection failures become :class:`~shared.errors.DatabaseUnavailable`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.adapters.db import CONNECTION_ERRORS, DATA_ERRORS
from shared.errors import DatabaseUnavailable, InvalidData
from shared.events import BaseEvent
from shared.ports import FallbackRow, FallbackSummary
from shared.status import FileStatus
from shared.text import make_safe


@dataclass(frozen=True)
class FallbackEntry:
    """One row of ``sluice fallback status`` (no data)."""

    file_id: uuid.UUID
    version_number: int
    owner: str
    size_bytes: int
    reason: str
    created_at: datetime
    migration_attempts: int
    last_error: str | None


_INSERT = """
INSERT INTO fallback_blobs (file_id, version_number, owner, content_type, size_bytes, sha256,
                            data_base64, event, reason, trace_context)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (file_id, version_number) DO NOTHING
RETURNING file_id
"""

_CLAIM = """
SELECT file_id, version_number, owner, content_type, size_bytes, sha256, data_base64,
       event, reason, created_at, migration_attempts, trace_context
FROM fallback_blobs
WHERE file_id = $1 AND version_number = $2
FOR UPDATE SKIP LOCKED
"""


class FallbackRepository:
    """``fallback_blobs`` over an asyncpg pool (closed by :meth:`close`): the
    :class:`~shared.ports.FallbackStore` port, and ``sluice fallback status``'s listing."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def close(self) -> None:
        """Close the pool."""
        await self._pool.close()

    async def keep(
        self,
        event: BaseEvent,
        data_base64: str,
        reason: str,
        trace_context: Mapping[str, str] | None = None,
    ) -> bool:
        """Insert the row of ``event``'s version; False if it was already there.
        ``trace_context`` (W3C ``traceparent``/``tracestate``) lets the migration continue the
        file's trace.

        Raises:
            DatabaseUnavailable: PostgreSQL refused or lost the connection.
            InvalidData: PostgreSQL refused a value of the row (permanent).
        """
        try:
            inserted = await self._pool.fetchval(
                _INSERT,
                event.file_id,
                event.version_number,
                event.owner,
                event.content_type,
                event.size_bytes,
                event.sha256,
                data_base64,
                event.model_dump(mode="json"),
                reason,
                dict(trace_context or {}),
            )
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(
                f"PostgreSQL unavailable: {exc!r}", file_id=str(event.file_id)
            ) from exc
        except DATA_ERRORS as exc:
            raise InvalidData(
                f"PostgreSQL refused a value: {exc!r}", file_id=str(event.file_id)
            ) from exc
        return inserted is not None

    async def oldest(self, limit: int) -> list[tuple[uuid.UUID, int]]:
        """The keys of up to ``limit`` rows, oldest first, rows that failed to migrate last
        (a migration batch).

        Raises:
            DatabaseUnavailable: PostgreSQL refused or lost the connection.
        """
        try:
            rows = await self._pool.fetch(
                "SELECT file_id, version_number FROM fallback_blobs"
                " ORDER BY migration_attempts, created_at, file_id LIMIT $1",
                limit,
            )
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc
        return [(row["file_id"], row["version_number"]) for row in rows]

    @asynccontextmanager
    async def claim(
        self, file_id: uuid.UUID, version_number: int
    ) -> AsyncIterator[ClaimedRow | None]:
        """Lock one row for its migration, in a transaction; ``None`` if it is gone or another
        worker holds it. The transaction commits when the block ends without an exception
        (with the row deleted if :meth:`ClaimedRow.delete` was called), and rolls back
        otherwise, which leaves the row for a later batch.

        Raises:
            DatabaseUnavailable: PostgreSQL refused or lost the connection.
        """
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                record = await connection.fetchrow(_CLAIM, file_id, version_number)
                yield None if record is None else ClaimedRow(connection, FallbackRow(**record))
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(
                f"PostgreSQL unavailable: {exc!r}", file_id=str(file_id)
            ) from exc

    async def record_failure(self, file_id: uuid.UUID, version_number: int, error: str) -> None:
        """Count a failed migration of a row and keep its error (for ``fallback status``)."""
        try:
            await self._pool.execute(
                "UPDATE fallback_blobs SET migration_attempts = migration_attempts + 1,"
                " last_error = $3 WHERE file_id = $1 AND version_number = $2",
                file_id,
                version_number,
                make_safe(error, 2000),
            )
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc

    async def summary(self) -> FallbackSummary:
        """Counts and sizes of what sits in the fallback (``fallback status``, metrics)."""
        try:
            record = await self._pool.fetchrow(
                "SELECT count(*) AS versions, coalesce(sum(size_bytes), 0) AS bytes,"
                " pg_total_relation_size('fallback_blobs') AS stored_bytes,"
                " min(created_at) AS oldest FROM fallback_blobs"
            )
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc
        assert record is not None
        return FallbackSummary(
            versions=record["versions"],
            bytes=int(record["bytes"]),
            stored_bytes=int(record["stored_bytes"]),
            oldest=record["oldest"],
        )

    async def corrupted_count(self) -> int:
        """Versions marked ``corrupted`` (a metric; read from the commit stage's table)."""
        try:
            count = await self._pool.fetchval(
                "SELECT count(*) FROM file_versions WHERE status = $1", FileStatus.CORRUPTED
            )
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc
        return int(count)

    async def entries(self, limit: int) -> list[FallbackEntry]:
        """Up to ``limit`` rows without their data, oldest first."""
        try:
            rows = await self._pool.fetch(
                "SELECT file_id, version_number, owner, size_bytes, reason, created_at,"
                " migration_attempts, last_error FROM fallback_blobs"
                " ORDER BY created_at, file_id LIMIT $1",
                limit,
            )
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc
        return [FallbackEntry(**row) for row in rows]


class ClaimedRow:
    """A row locked by :meth:`FallbackRepository.claim`; :meth:`delete` ends its fallback."""

    def __init__(self, connection: Any, row: FallbackRow) -> None:
        self._connection = connection
        self.row = row

    async def delete(self) -> None:
        """Delete the row in the claim's transaction (committed when the claim ends)."""
        await self._connection.execute(
            "DELETE FROM fallback_blobs WHERE file_id = $1 AND version_number = $2",
            self.row.file_id,
            self.row.version_number,
        )
