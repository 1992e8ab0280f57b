"""The mirror consumer (seed 001: backup by mirror; docs/operations.md § Backup mirror).

- ``file.committed`` (``available``): the version's original and thumbnails, as the commit
  stage recorded them, are read from the main store and written to the mirror's bucket under
  the same keys with their SHA-256, which the mirror's S3 verifies on write
  (``x-amz-checksum-sha256``; a wrong one is BadDigest); the original's bytes must also hash to
  the version's SHA-256 first. Each copy joins ``mirrored_objects`` once written.
- ``file.deleted`` and ``file.quarantined``: every object ``mirrored_objects`` lists for the
  file is deleted from the mirror, then its rows. (A quarantined file's bytes stay in the main
  store's ``_quarantine/``; the mirror holds no infected copy.)

Idempotent (RabbitMQ: at-least-once delivery): an object already listed with the same SHA-256
and present on the mirror is not copied again; deleting what is gone is no error. A committed
event whose version is no longer ``available`` (deleted, quarantined, corrupted meanwhile)
copies nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from shared.adapters.db import CONNECTION_ERRORS
from shared.errors import ChecksumMismatch, DatabaseUnavailable
from shared.events import BaseEvent, FileCommitted
from shared.ports import ObjectStore
from shared.status import FileStatus

log = structlog.get_logger("sluice.mirror")


@dataclass(frozen=True)
class Deps:
    """The database (versions to read, ``mirrored_objects`` to keep), the main store, and the
    mirror's store."""

    pool: asyncpg.Pool
    main: ObjectStore
    mirror: ObjectStore


async def handle(event: BaseEvent, deps: Deps) -> list[BaseEvent]:
    """Copy a committed file's objects to the mirror, or remove a deleted or quarantined
    file's copies there. Emits nothing.

    Raises:
        ChecksumMismatch: the main store's original is not the version's SHA-256, or the mirror
            refused the bytes (dead-lettered: ``sluice reconcile`` reports the damage).
        SourceMissing: an object the version names is gone from the main store.
        StorageUnavailable: either S3 down (retried). DatabaseUnavailable: PostgreSQL down.
    """
    if isinstance(event, FileCommitted):
        if event.status == FileStatus.AVAILABLE:
            await copy_version(event, deps)
        return []
    await remove_copies(event, deps)
    return []


async def _db(method: Any, *args: Any) -> Any:
    """``await method(*args)`` (a pool query), a lost connection as ``DatabaseUnavailable``."""
    try:
        return await method(*args)
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"mirror cannot reach PostgreSQL: {exc!r}") from exc


async def copy_version(event: BaseEvent, deps: Deps) -> int:
    """Copy the version's objects not yet on the mirror; how many were copied."""
    row = await _db(
        deps.pool.fetchrow,
        "SELECT status, bucket, object_key, sha256, thumbnails FROM file_versions"
        " WHERE file_id = $1 AND version_number = $2",
        event.file_id,
        event.version_number,
    )
    if row is None or row["status"] != FileStatus.AVAILABLE or row["object_key"] is None:
        log.info("version not available any more; nothing to mirror")
        return 0
    keys = [(row["object_key"], row["sha256"])]
    keys += [(thumb["key"], None) for thumb in row["thumbnails"] or []]
    done = {
        r["object_key"]: r["sha256"]
        for r in await _db(
            deps.pool.fetch,
            "SELECT object_key, sha256 FROM mirrored_objects WHERE file_id = $1",
            event.file_id,
        )
    }
    copied = 0
    for key, expected in keys:
        if key in done and (expected is None or done[key] == expected):
            if await deps.mirror.head(key) is not None:
                continue
        info = await deps.main.head(key)
        data = await deps.main.get_bytes(key)
        digest = hashlib.sha256(data).hexdigest()
        if expected is not None and digest != expected:
            raise ChecksumMismatch(
                "main store's original does not match the version; not mirrored",
                key=key,
                expected=expected,
                actual=digest,
            )
        content_type = (info.content_type if info else None) or "application/octet-stream"
        await deps.mirror.put_bytes(
            key, data, sha256_hex=digest, content_type=content_type, metadata={"sha256": digest}
        )
        await _db(
            deps.pool.execute,
            "INSERT INTO mirrored_objects (file_id, version_number, object_key, sha256, size_bytes)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (file_id, object_key) DO UPDATE"
            " SET sha256 = EXCLUDED.sha256, size_bytes = EXCLUDED.size_bytes,"
            " version_number = EXCLUDED.version_number, mirrored_at = now()",
            event.file_id,
            event.version_number,
            key,
            digest,
            len(data),
        )
        copied += 1
    log.info("mirrored", objects=copied)
    return copied


async def remove_copies(event: BaseEvent, deps: Deps) -> int:
    """Delete every mirrored object of the file, then its rows; how many."""
    rows = await _db(
        deps.pool.fetch, "SELECT object_key FROM mirrored_objects WHERE file_id = $1", event.file_id
    )
    for row in rows:
        await deps.mirror.delete(row["object_key"])
    await _db(deps.pool.execute, "DELETE FROM mirrored_objects WHERE file_id = $1", event.file_id)
    log.info("mirror copies removed", objects=len(rows), reason=event.type)
    return len(rows)
