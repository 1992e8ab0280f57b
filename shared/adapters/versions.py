"""Version numbers for new versions of a file (table ``version_reservations``, migration 0009).

A new version (``POST /v1/files/{id}/versions``, an upstream ``file.received`` naming an
existing file) needs its number before its ``file.received`` is published: the number is in
every event of the version and in its object key (``shared.naming.object_key``). The commit
stage is still the only writer of file state; a reservation is only a number handed out.

Why two new versions of one file never get the same number: :meth:`VersionNumbers.reserve`
takes a transaction-level advisory lock on the file, then reads the largest number among the
reservations, ``file_versions`` and ``files.current_version`` and inserts one more, all in one
transaction; a second reservation of the same file waits for the lock and reads after the
first has committed (READ COMMITTED: each statement sees what was committed before it began).
The primary key ``(file_id, version_number)`` would refuse a duplicate anyway. Rows are never
removed, so a number given to an upload that is then refused is never given again. The
``event_id`` of the ``file.received`` is unique: reserving again for the same event (a
redelivery at the ingress) returns the same number.
"""

from __future__ import annotations

import uuid

import asyncpg

from shared.adapters.db import CONNECTION_ERRORS
from shared.errors import DatabaseUnavailable

#: A seed of its own, so this lock never collides with the commit stage's history lock.
_LOCK_SEED = 0x5E55
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text, $2))"
_EXISTING = "SELECT version_number FROM version_reservations WHERE event_id = $1"
_NEXT = """
SELECT GREATEST(
    (SELECT max(version_number) FROM version_reservations WHERE file_id = $1),
    (SELECT max(version_number) FROM file_versions WHERE file_id = $1),
    (SELECT current_version FROM files WHERE file_id = $1),
    1) + 1
"""
_INSERT = """
INSERT INTO version_reservations (file_id, version_number, event_id, owner)
VALUES ($1, $2, $3, $4)
"""


class VersionNumbers:
    """Hands out version numbers, over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def recorded_owner(self, file_id: uuid.UUID) -> str | None:
        """The file's recorded owner, ``None`` if the commit stage has not recorded it.

        Raises:
            DatabaseUnavailable: PostgreSQL cannot be reached.
        """
        try:
            owner: str | None = await self._pool.fetchval(
                "SELECT owner FROM files WHERE file_id = $1", file_id
            )
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc
        return owner

    async def recorded_version(self, event_id: uuid.UUID) -> int | None:
        """The version number of the recorded event ``event_id`` (a ``file.received`` the
        commit stage has seen already), or ``None``.

        Raises:
            DatabaseUnavailable: PostgreSQL cannot be reached.
        """
        try:
            number: int | None = await self._pool.fetchval(
                "SELECT version_number FROM file_events WHERE event_id = $1", event_id
            )
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc
        return number

    async def reserve(self, file_id: uuid.UUID, owner: str, event_id: uuid.UUID) -> int:
        """The number of the new version of ``file_id`` that the ``file.received``
        ``event_id`` announces: the same as before for an ``event_id`` already given one,
        else one more than any number the file has or was given (from 2).

        Raises:
            DatabaseUnavailable: PostgreSQL cannot be reached.
        """
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                await connection.execute(_LOCK, file_id, _LOCK_SEED)
                existing: int | None = await connection.fetchval(_EXISTING, event_id)
                if existing is not None:
                    return existing
                number: int = await connection.fetchval(_NEXT, file_id)
                await connection.execute(_INSERT, file_id, number, event_id, owner)
                return number
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc
