"""Erasing an owner: every byte and every personal field (seed 000: GDPR; docs/gdpr.md).

:func:`erase_owner`, for ``sluice gdpr erase --owner X`` and ``POST /ops/v1/gdpr/erasures``:

1. the receipt row is written first (``gdpr_erasures``: an id, the owner's SHA-256, who asked,
   when): from then on the commit stage drops every event of a file of that owner received
   before the erasure, and answers a stage event with a new purge, so a file in flight never
   comes back;
2. the owner's API keys are removed (no new upload, no read);
3. every object under ``{owner}/`` in Sluice's bucket (originals of every version, thumbnails,
   objects of files never recorded) and under ``_quarantine/{owner}/`` (what rescans moved),
   the owner's ``fallback_blobs`` rows and the spool entries of its files are removed here, at
   once, on either storage backend;
4. a ``file.deleted`` (``reason="erasure"``) is published with a publisher confirm for each of
   the owner's recorded files: the commit stage (the only writer of file state) removes its
   ``files``, ``file_events`` and ``file_deletions`` rows, names and metadata with them; the
   purge worker removes any byte a late stage wrote;
5. it waits (at most ``wait_s``) until no row of the owner is left in ``files``,
   ``file_events`` and ``file_deletions``, then removes the owner's messages from every
   dead-letter queue (late dead letters included) and lists the bucket once more;
6. the receipt gets its counts and end time.

The receipt never holds the owner's name, only its SHA-256. What stays: the owner's name in an
upstream service's allowed owners (``upstreams``, configuration written by ``sluice upstream
add``), and in logs, which have their own retention.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from botocore.exceptions import BotoCoreError, ClientError

from shared.adapters import broker
from shared.adapters.db import create_pool
from shared.adapters.object_storage import open_object_storage
from shared.adapters.spools import open_spools
from shared.erasure import owner_digest
from shared.errors import InvalidOwner, StorageUnavailable
from shared.events import FileDeleted, utcnow
from shared.naming import quarantine_key
from shared.ops.deadletters import Selection, purge
from shared.settings import Settings
from shared.topology import Topology

log = structlog.get_logger("sluice.gdpr")
#: Seconds between two counts of the owner's rows while the commit stage removes them.
_POLL_S = 0.5
_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

#: ``on_progress(step, done)``: the step's name and how many things it removed so far.
Progress = Callable[[str, int], None]

_OWNER_FILES = """
SELECT f.file_id, f.received_at, f.current_version, f.original_name, f.content_type, f.kind,
       f.metadata, v.source, v.size_bytes, v.sha256
FROM files f
LEFT JOIN file_versions v ON v.file_id = f.file_id AND v.version_number = f.current_version
WHERE f.owner = $1
"""

_ROWS_LEFT = """
SELECT (SELECT count(*) FROM files WHERE owner = $1)
     + (SELECT count(*) FROM file_events WHERE payload->>'owner' = $1)
     + (SELECT count(*) FROM file_deletions WHERE owner = $1)
"""


@dataclass(frozen=True)
class ErasureReceipt:
    """The receipt of one erasure (a row of ``gdpr_erasures``): no name, the owner's SHA-256.

    ``counts``: ``files`` (recorded files deleted), ``objects`` (originals and thumbnails),
    ``fallback_rows``, ``spool_entries``, ``dead_letters``, ``api_keys``, ``rows_left`` (rows
    of the owner still in the file tables when the wait ended: 0 for a complete erasure).
    """

    erasure_id: uuid.UUID
    owner_sha256: str
    requested_by: str
    started_at: datetime
    finished_at: datetime
    counts: dict[str, int]

    @property
    def complete(self) -> bool:
        """Whether nothing of the owner was left in the file tables."""
        return self.counts.get("rows_left", 0) == 0

    def as_json(self) -> dict[str, Any]:
        """The receipt as a JSON object; times ISO 8601, the id a string."""
        fields = dataclasses.asdict(self)
        fields.update(
            erasure_id=str(self.erasure_id),
            started_at=self.started_at.isoformat(),
            finished_at=self.finished_at.isoformat(),
        )
        return fields


def check_owner_name(owner: str) -> str:
    """``owner`` if it matches the event contract's pattern (``shared.events.Owner``).

    Raises:
        InvalidOwner: it does not.
    """
    if not _OWNER.fullmatch(owner):
        raise InvalidOwner(f"not an owner name: {owner!r}", owner=owner[:80])
    return owner


def _deletion(row: Any, owner: str, erasure_id: uuid.UUID) -> FileDeleted:
    file_id = row["file_id"]
    return FileDeleted.of_file(
        {
            "file_id": file_id,
            "version_number": row["current_version"],
            "owner": owner,
            "received_at": row["received_at"],
            "source": row["source"] or f"spool://{file_id}",
            "size_bytes": row["size_bytes"] or 0,
            "sha256": row["sha256"] or "0" * 64,
            "content_type": row["content_type"] or "application/octet-stream",
            "original_name": row["original_name"] or "erased",
            "kind": row["kind"],
            "metadata": row["metadata"] or {},
        },
        reason="erasure",
        erasure_id=erasure_id,
    )


async def _erase_objects(settings: Settings, owner: str) -> int:
    count = 0
    async with open_object_storage(settings) as storage:
        try:  # served, and moved to quarantine by a rescan
            keys = [
                info.key
                for prefix in (f"{owner}/", quarantine_key(f"{owner}/"))
                async for info in storage.list_objects(prefix)
            ]
        except (BotoCoreError, ClientError, OSError) as exc:
            raise StorageUnavailable(f"cannot list the owner's objects: {exc!r}") from exc
        for key in keys:
            await storage.delete(key)
            count += 1
    return count


async def _erase_spool(settings: Settings, file_ids: list[uuid.UUID]) -> int:
    count = 0
    async with open_spools(settings) as spools:
        for file_id in file_ids:
            refs = {spools.local.reference(str(file_id)), spools.reference(str(file_id))}
            for ref in refs:
                count += bool(await spools.delete(ref))
    return count


async def _rows_left(pool: asyncpg.Pool, owner: str) -> int:
    left: int = await pool.fetchval(_ROWS_LEFT, owner)
    return left


async def erase_owner(
    settings: Settings,
    owner: str,
    *,
    requested_by: str,
    wait_s: float = 60.0,
    on_progress: Progress | None = None,
) -> ErasureReceipt:
    """Erase ``owner`` (module docstring) and return the stored receipt.

    Raises:
        InvalidOwner: ``owner`` is not an owner name.
        DatabaseUnavailable, BrokerUnavailable, StorageUnavailable: a dependency is down; the
            receipt row then says so by its missing ``finished_at``, and running the erasure
            again finishes it (every step is idempotent).
    """
    check_owner_name(owner)
    progress = on_progress or (lambda step, done: None)
    erasure_id = uuid.uuid4()
    started_at = utcnow()
    pool = await create_pool(settings.database)
    try:
        await pool.execute(
            "INSERT INTO gdpr_erasures (erasure_id, owner_sha256, requested_by, started_at)"
            " VALUES ($1, $2, $3, $4)",
            erasure_id,
            owner_digest(owner),
            requested_by,
            started_at,
        )
        counts: dict[str, int] = {}
        result = await pool.execute("DELETE FROM api_keys WHERE owner = $1", owner)
        counts["api_keys"] = int(result.rsplit(" ", 1)[-1])
        rows = await pool.fetch(_OWNER_FILES, owner)
        counts["files"] = len(rows)
        counts["objects"] = await _erase_objects(settings, owner)
        progress("objects", counts["objects"])
        result = await pool.execute("DELETE FROM fallback_blobs WHERE owner = $1", owner)
        counts["fallback_rows"] = int(result.rsplit(" ", 1)[-1])
        ids = [row["file_id"] for row in rows]
        ids += [
            r["file_id"]
            for r in await pool.fetch("SELECT file_id FROM file_deletions WHERE owner = $1", owner)
        ]
        counts["spool_entries"] = await _erase_spool(settings, ids)
        topology = Topology.of(settings.amqp)
        connection = await broker.connect(settings.amqp)
        async with connection:
            publisher = await broker.Publisher.create(connection, settings.amqp, topology)
            for n, row in enumerate(rows, 1):
                await publisher.publish(_deletion(row, owner, erasure_id))
                progress("files", n)
            left = await _rows_left(pool, owner)
            for _ in range(math.ceil(wait_s / _POLL_S)):  # the commit stage removes them
                if not left:
                    break
                await asyncio.sleep(_POLL_S)
                left = await _rows_left(pool, owner)
            counts["rows_left"] = left
            purged = await purge(
                connection,
                topology,
                Selection(owner=owner),
                settings=settings.amqp,
                reason=f"gdpr erasure {erasure_id}",
            )
            counts["dead_letters"] = purged.purged
            progress("dead_letters", purged.purged)
        counts["objects"] += await _erase_objects(settings, owner)  # a stage's late write
        finished_at = utcnow()
        await pool.execute(
            "UPDATE gdpr_erasures SET finished_at = $2, counts = $3::jsonb WHERE erasure_id = $1",
            erasure_id,
            finished_at,
            counts,
        )
    finally:
        await pool.close()
    log.info("owner erased", erasure_id=str(erasure_id), **counts)
    return ErasureReceipt(
        erasure_id=erasure_id,
        owner_sha256=owner_digest(owner),
        requested_by=requested_by,
        started_at=started_at,
        finished_at=finished_at,
        counts=counts,
    )
