"""The gateway's read queries on a file's versions (``file_versions`` ⋈ ``files``).

Every query filters by owner, so another owner's file reads as one that does not exist, and
by :data:`~services.gateway.repo.VISIBLE`, so a deleted file's versions are gone from the
moment DELETE answered.
Versions recorded before migration 0009 have no name, type or receipt time of their own: they
read the file's.
"""

from __future__ import annotations

import uuid

import asyncpg

from services.gateway.repo import VISIBLE, db_call

_VERSION_COLUMNS = """
    v.file_id, v.version_number, v.status, v.size_bytes, v.sha256, v.source, v.bucket,
    v.object_key, v.thumbnails, v.thumbnail_error, v.rejection_reason, v.scanner,
    v.signature_version,
    COALESCE(v.original_name, f.original_name) AS original_name,
    COALESCE(v.content_type, f.content_type) AS content_type,
    COALESCE(v.received_at, f.received_at) AS received_at,
    f.owner, f.kind, f.metadata, f.current_version, f.status_reason,
    EXISTS (SELECT 1 FROM fallback_blobs b
            WHERE b.file_id = v.file_id AND b.version_number = v.version_number
              AND b.owner = f.owner) AS in_fallback
FROM file_versions v JOIN files f ON f.file_id = v.file_id
"""


async def fetch_versions(
    pool: asyncpg.Pool, file_id: uuid.UUID, owner: str
) -> list[asyncpg.Record]:
    """Every version of ``owner``'s file, oldest first; empty if it is not ``owner``'s.

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    query = f"""SELECT {_VERSION_COLUMNS}
        WHERE v.file_id = $1 AND f.owner = $2 AND {VISIBLE} ORDER BY v.version_number"""
    rows: list[asyncpg.Record] = await db_call(lambda: pool.fetch(query, file_id, owner))
    return rows


async def fetch_version(
    pool: asyncpg.Pool, file_id: uuid.UUID, owner: str, version_number: int
) -> asyncpg.Record | None:
    """Version ``version_number`` of ``owner``'s file, or ``None``.

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    query = f"""SELECT {_VERSION_COLUMNS}
        WHERE v.file_id = $1 AND f.owner = $2 AND v.version_number = $3 AND {VISIBLE}"""
    row: asyncpg.Record | None = await db_call(
        lambda: pool.fetchrow(query, file_id, owner, version_number)
    )
    return row


async def fetch_version_history(
    pool: asyncpg.Pool, file_id: uuid.UUID, version_number: int
) -> list[asyncpg.Record]:
    """The recorded events of one version, oldest first (the shape of
    :func:`services.gateway.repo.fetch_history`).

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    query = """
        SELECT event_type AS type, version_number, occurred_at, recorded_at, detail
        FROM file_events WHERE file_id = $1 AND version_number = $2
        ORDER BY occurred_at, recorded_at, event_id
    """
    rows: list[asyncpg.Record] = await db_call(lambda: pool.fetch(query, file_id, version_number))
    return rows


async def event_recorded(pool: asyncpg.Pool, event_id: uuid.UUID) -> bool:
    """Whether the commit stage has recorded event ``event_id``.

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    query = "SELECT EXISTS (SELECT 1 FROM file_events WHERE event_id = $1)"
    found: bool = await db_call(lambda: pool.fetchval(query, event_id))
    return found
