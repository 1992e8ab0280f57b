"""``sluice rescan``: ask the scan stage to scan stored versions again (seed 000: a scan that
keeps protecting stored files as signatures change; docs/security.md § Rescans).

Selected: versions ``available`` in Sluice's bucket, of one owner or all, and optionally only
those last scanned with a signature database older than a version number (the number clamd
reports before the ``/``, e.g. ``27000`` in ``27000/Tue Nov 19 09:32:00 2024``; a version
scanned without an official database, ``unknown``, counts as older than any). Each gets a
``file.rescan_requested`` published with a confirm, paced to ``rate_per_s``. The scan stage
does the work; the commit stage records ``file.rescanned`` or ``file.quarantined``.

A run has its own ``rescan_id``: the event ids are UUIDv5 of it, the file and the version, so a
run interrupted and started again asks anew (a rescan is harmless twice), while a publish
retried within one run is recognised as the same request.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from shared.adapters.broker import Publisher
from shared.adapters.db import CONNECTION_ERRORS
from shared.errors import DatabaseUnavailable
from shared.events import FileRescanRequested, version_description
from shared.ops.deadletters.moves import _Pacer as Pacer
from shared.status import FileStatus

_SELECT = """
    SELECT f.file_id, v.version_number, f.owner, f.received_at, v.source, v.size_bytes,
           v.sha256, f.content_type, f.original_name, f.kind, f.metadata, v.bucket,
           v.object_key, v.thumbnails, v.signature_version
    FROM file_versions v JOIN files f ON f.file_id = v.file_id
    WHERE v.status = $1 AND v.object_key IS NOT NULL AND v.bucket = $2
      AND ($3::text IS NULL OR f.owner = $3)
      AND ($4::bigint IS NULL
           OR coalesce(substring(v.signature_version from '^([0-9]+)')::bigint, -1) < $4)
    ORDER BY f.received_at, f.file_id, v.version_number
"""

#: ``on_progress(requested, total)``.
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class RescanSelection:
    """Which stored versions to rescan: ``owner``'s only (all when ``None``), and only those
    scanned with a signature database numbered below ``older_than_signature`` (all when
    ``None``)."""

    owner: str | None = None
    older_than_signature: int | None = None


@dataclass(frozen=True)
class RescanRun:
    """What a run asked: its id, and how many versions."""

    rescan_id: uuid.UUID
    requested: int


async def select_versions(
    pool: asyncpg.Pool, bucket: str, selection: RescanSelection
) -> list[asyncpg.Record]:
    """The versions ``selection`` names, oldest received first.

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    try:
        rows: list[asyncpg.Record] = await pool.fetch(
            _SELECT,
            FileStatus.AVAILABLE.value,
            bucket,
            selection.owner,
            selection.older_than_signature,
        )
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot select versions to rescan: {exc!r}") from exc
    return rows


def rescan_request(row: asyncpg.Record, rescan_id: uuid.UUID) -> FileRescanRequested:
    """The ``file.rescan_requested`` of one selected version."""
    described = version_description(row, row["file_id"], row["version_number"])
    return FileRescanRequested.about(
        described,
        bucket=row["bucket"],
        key=row["object_key"],
        thumbnail_keys=[thumb["key"] for thumb in row["thumbnails"] or []],
        rescan_id=rescan_id,
    )


async def request_rescans(
    rows: list[asyncpg.Record],
    publisher: Publisher,
    *,
    rate_per_s: float | None,
    on_progress: ProgressCallback | None = None,
) -> RescanRun:
    """Publish a ``file.rescan_requested`` for each row, confirmed, at most ``rate_per_s`` a
    second (``None``: as fast as confirms come).

    Raises:
        BrokerUnavailable: a publish was not confirmed (those before it were: run again).
    """
    rescan_id = uuid.uuid4()
    pacer = Pacer(rate_per_s)
    for done, row in enumerate(rows, start=1):
        await pacer.wait()
        await publisher.publish(rescan_request(row, rescan_id))
        if on_progress is not None:
            on_progress(done, len(rows))
    return RescanRun(rescan_id, len(rows))
