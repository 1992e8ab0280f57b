"""The gateway's read queries on ``files``, ``file_versions`` and ``file_events``.

Only the commit consumer writes those tables; every query here filters by owner, so a file of
another owner reads exactly like a file that does not exist.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import asyncpg

from shared.adapters.db import CONNECTION_ERRORS
from shared.adapters.row_cipher import RowCipher
from shared.errors import DatabaseUnavailable
from shared.events import FileDeleted
from shared.history import LAST_EVENT_TYPE

T = TypeVar("T")

_FILE_COLUMNS = """
    f.file_id, f.owner, f.original_name, f.content_type, f.kind, f.metadata, f.status,
    f.status_reason, f.current_version, f.received_at, f.updated_at, f.attention,
    v.size_bytes, v.sha256, v.source, v.bucket, v.object_key, v.thumbnails, v.thumbnail_error,
    COALESCE(v.received_at, f.received_at) AS version_received_at,
    COALESCE(v.original_name, f.original_name) AS version_name,
    v.scanner, v.signature_version,
    EXISTS (SELECT 1 FROM fallback_blobs b
            WHERE b.file_id = f.file_id AND b.version_number = f.current_version
              AND b.owner = f.owner) AS in_fallback
"""
_FROM = """
    FROM files f
    LEFT JOIN file_versions v
        ON v.file_id = f.file_id AND v.version_number = f.current_version
"""

# GET /v1/files?q=: the words ($11) in the file's name ('.', '_', '-' read as spaces) or in the
# text extracted from its current version (migration 0012's GIN indexes), of the same owner only.
SEARCH = """(
    to_tsvector('simple', translate(f.original_name, '._-', '   '))
        @@ websearch_to_tsquery('simple', $11)
    OR EXISTS (SELECT 1 FROM file_texts t
               WHERE t.file_id = f.file_id AND t.version_number = f.current_version
                 AND t.owner = f.owner AND t.search @@ websearch_to_tsquery('simple', $11)))
"""

# A deleted file reads like a file that does not exist, from the moment DELETE answered (the
# gateway's tombstone in file_deletions) and after the commit stage recorded it (status
# 'deleted'): docs/gdpr.md. ``f`` is the files row; every read of a file's rows adds it.
VISIBLE = """
    f.status <> 'deleted'
    AND NOT EXISTS (SELECT 1 FROM file_deletions d WHERE d.file_id = f.file_id)
"""


async def db_call(operation: Callable[[], Awaitable[T]]) -> T:
    """Await ``operation``, turning a lost or refused connection into DatabaseUnavailable.

    Raises:
        DatabaseUnavailable: PostgreSQL refused, dropped the connection, or timed out.
    """
    try:
        return await operation()
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc


async def fetch_file(pool: asyncpg.Pool, file_id: uuid.UUID, owner: str) -> asyncpg.Record | None:
    """The file and its current version, or ``None`` if it is not ``owner``'s (or not there).

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    query = f"SELECT {_FILE_COLUMNS} {_FROM} WHERE f.file_id = $1 AND f.owner = $2 AND {VISIBLE}"
    row: asyncpg.Record | None = await db_call(lambda: pool.fetchrow(query, file_id, owner))
    return row


async def fetch_history(pool: asyncpg.Pool, file_id: uuid.UUID) -> list[asyncpg.Record]:
    """Every recorded event of the file, oldest first (``type``, ``version_number``,
    ``occurred_at``, ``recorded_at``, ``detail``).

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    query = """
        SELECT event_type AS type, version_number, occurred_at, recorded_at, detail
        FROM file_events WHERE file_id = $1
        ORDER BY occurred_at, recorded_at, event_id
    """
    rows: list[asyncpg.Record] = await db_call(lambda: pool.fetch(query, file_id))
    return rows


async def fetch_owner(pool: asyncpg.Pool, file_id: uuid.UUID) -> str | None:
    """The file's recorded owner, or ``None`` if it has no row (yet).

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    query = f"SELECT owner FROM files f WHERE f.file_id = $1 AND {VISIBLE}"
    owner: str | None = await db_call(lambda: pool.fetchval(query, file_id))
    return owner


async def fetch_events_after(
    pool: asyncpg.Pool, file_id: uuid.UUID, after_seq: int
) -> list[asyncpg.Record]:
    """The file's recorded events numbered past ``after_seq``, in their order (``seq``,
    ``type``, ``version_number``, ``occurred_at``, ``recorded_at``, ``detail``).

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    query = """
        SELECT seq, event_type AS type, version_number, occurred_at, recorded_at, detail
        FROM file_events WHERE file_id = $1 AND seq > $2
        ORDER BY seq
    """
    rows: list[asyncpg.Record] = await db_call(lambda: pool.fetch(query, file_id, after_seq))
    return rows


async def committed_at_or_before(
    pool: asyncpg.Pool, file_id: uuid.UUID, seq: int, version: int | None = None
) -> bool:
    """Whether the file's ``file.committed`` (of ``version``, when given) or its
    ``file.deleted`` is numbered ``seq`` or less (a stream resumed after its end has nothing
    more to wait for).

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    query = """
        SELECT EXISTS (SELECT 1 FROM file_events
                       WHERE file_id = $1 AND seq <= $2
                         AND ((event_type = $3 AND ($4::int IS NULL OR version_number = $4))
                              OR event_type = $5))
    """
    done: bool = await db_call(
        lambda: pool.fetchval(
            query, file_id, seq, LAST_EVENT_TYPE, version, FileDeleted.routing_key
        )
    )
    return done


@dataclass(frozen=True)
class ListFilters:
    """What ``GET /v1/files`` narrows the list to; ``None`` leaves a filter out.
    ``received_after`` is exclusive, ``received_before`` exclusive; ``name_prefix`` matches
    the start of ``original_name``, case-sensitive."""

    status: str | None = None
    kind: str | None = None
    content_type: str | None = None
    received_after: datetime | None = None
    received_before: datetime | None = None
    name_prefix: str | None = None
    #: Words searched in the file's name and extracted text (``websearch_to_tsquery``,
    #: configuration ``simple``; docs/transforms.md § Search).
    q: str | None = None


def like_prefix(prefix: str) -> str:
    """A ``LIKE`` pattern matching names that start with ``prefix`` (``\\``, ``%`` and ``_``
    escaped)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


async def fetch_page(
    pool: asyncpg.Pool,
    owner: str,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    filters: ListFilters | None = None,
) -> list[asyncpg.Record]:
    """Up to ``limit`` of ``owner``'s files matching ``filters``, newest first, strictly after
    the keyset ``after`` (``(received_at, file_id)`` of the last row of the previous page).
    Each filter has an index with the owner and the keyset order (migration 0009).

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    stamp, last_id = after if after else (None, None)
    f = filters or ListFilters()
    name = like_prefix(f.name_prefix) if f.name_prefix else None
    query = f"""
        SELECT {_FILE_COLUMNS} {_FROM}
        WHERE f.owner = $1 AND {VISIBLE}
          AND ($2::timestamptz IS NULL OR (f.received_at, f.file_id) < ($2, $3::uuid))
          AND ($5::text IS NULL OR f.status = $5)
          AND ($6::text IS NULL OR f.kind = $6)
          AND ($7::text IS NULL OR f.content_type = $7)
          AND ($8::timestamptz IS NULL OR f.received_at > $8)
          AND ($9::timestamptz IS NULL OR f.received_at < $9)
          AND ($10::text IS NULL OR f.original_name LIKE $10)
          AND ($11::text IS NULL OR {SEARCH})
        ORDER BY f.received_at DESC, f.file_id DESC
        LIMIT $4
    """
    args = (f.status, f.kind, f.content_type, f.received_after, f.received_before, name, f.q)
    rows: list[asyncpg.Record] = await db_call(
        lambda: pool.fetch(query, owner, stamp, last_id, limit, *args)
    )
    return rows


async def fetch_fallback_bytes(
    pool: asyncpg.Pool,
    file_id: uuid.UUID,
    version_number: int,
    owner: str,
    cipher: RowCipher | None = None,
) -> bytes | None:
    """The decoded original of ``owner``'s version kept in the fallback table, or ``None``
    (a row another owner's event put there is never served as this owner's file); a sealed row
    is opened with ``cipher`` (``SLUICE_FALLBACK_ENCRYPTION_*``).

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
        ChecksumMismatch: the row does not open (damaged). ConfigError: its key is missing.
    """
    query = (
        "SELECT data_base64, sha256 FROM fallback_blobs"
        " WHERE file_id = $1 AND version_number = $2 AND owner = $3"
    )
    row = await db_call(lambda: pool.fetchrow(query, file_id, version_number, owner))
    if row is None:
        return None
    opener = cipher or RowCipher.plain()
    return await asyncio.to_thread(
        lambda: opener.open(
            row["data_base64"], file_id=file_id, version_number=version_number, sha256=row["sha256"]
        )
    )


async def fetch_text(
    pool: asyncpg.Pool, file_id: uuid.UUID, version_number: int, owner: str
) -> asyncpg.Record | None:
    """The ``file_texts`` row of ``owner``'s version (``transform``, ``state``, ``text_key``,
    ``size_bytes``, ``pages``, ``ocr_pages``, ``language``, ``document_metadata``, ``error``,
    ``search_truncated``), or ``None`` while no transform answered.

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    query = """
        SELECT transform, state, text_key, size_bytes, pages, ocr_pages, language,
               document_metadata, error, search_truncated
        FROM file_texts WHERE file_id = $1 AND version_number = $2 AND owner = $3
    """
    row: asyncpg.Record | None = await db_call(
        lambda: pool.fetchrow(query, file_id, version_number, owner)
    )
    return row


async def fetch_video(
    pool: asyncpg.Pool, file_id: uuid.UUID, version_number: int, owner: str
) -> asyncpg.Record | None:
    """The ``file_videos`` row of ``owner``'s version (``state``, ``master_key``,
    ``duration_s``, ``width``, ``height``, ``has_audio``, ``segment_s``, ``renditions``,
    ``poster``, ``error``; migration 0013), or ``None`` while the video stage has not answered.

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    query = """
        SELECT state, master_key, duration_s, width, height, has_audio, segment_s, renditions,
               poster, error
        FROM file_videos WHERE file_id = $1 AND version_number = $2 AND owner = $3
    """
    row: asyncpg.Record | None = await db_call(
        lambda: pool.fetchrow(query, file_id, version_number, owner)
    )
    return row
