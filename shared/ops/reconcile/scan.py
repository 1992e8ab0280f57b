"""The storage reconciliation run (seed 004): the bucket and the database checked against each
other, in bounded memory, filling a :class:`~shared.ops.reconcile.report.ReconcileReport` (what
is reported: :mod:`shared.ops.reconcile.report`).

Orphans are deleted only when asked (``delete_orphans_older_than``, at least the grace period)
and never when the key names a file whose recorded status is not final (in flight, or waiting
in a dead-letter queue: its commit would record the key later). Seed 004: store orphans are
reported, never deleted automatically.

How, in bounded memory: a merge-join of two sorted streams. The bucket listing
(ListObjectsV2, pages of 1,000) is walked in the order the store returns it; the expected keys
(every version's ``object_key`` and each of its thumbnail keys, one row per key) come from a
server-side cursor over one ``ORDER BY ... COLLATE "C"`` query, so PostgreSQL sorts them (on
disk if need be) in the same byte order. Equal keys match; a listed key the cursor has passed
is an orphan candidate; an expected key the listing has passed is a missing candidate.

The S3 API promises UTF-8 binary order (:attr:`ListingOrder.BINARY`), but SeaweedFS walks its
directories, so ``alice/x`` comes before ``alice-x/y`` (:attr:`ListingOrder.SEGMENTS`: compared
``/``-segment by segment; PostgreSQL sorts ``string_to_array(key, '/')`` the same way). A
listing out of the chosen order cannot make the report wrong, only slower, because every
candidate is confirmed before it is reported: a missing candidate by a HEAD of the key and a
fresh read of its version (which also absorbs a file deleted while the run went on); orphan
candidates, 500 at a time, by a fresh look-up of each key among the versions of the file it
names (the primary-key index; keys that name no file cost one scan of all versions per batch).
Keys met out of order are counted (``out_of_order_keys``) so the other order can be chosen.

Memory: one listing page, the cursor's prefetch, at most 500 orphan candidates awaiting their
look-up, ``deep_concurrency`` streams being hashed, and at most ``max_findings`` entries per
kind of finding (the counts stay exact; ``truncated`` says entries were left out).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import botocore.exceptions

from shared.adapters.db import CONNECTION_ERRORS
from shared.adapters.storage import ObjectInfo
from shared.errors import (
    DatabaseUnavailable,
    PermanentError,
    SourceMissing,
    StorageUnavailable,
)
from shared.naming import QUARANTINE_PREFIX
from shared.ops.reconcile.report import (
    ContentMismatch,
    ListingOrder,
    MissingObject,
    Orphan,
    ReconcileOptions,
    ReconcileReport,
)
from shared.ports import ObjectStore
from shared.status import FINAL, IN_BUCKET, FileStatus

_ORPHAN_BATCH = 500
_PROGRESS_EVERY = 250
#: ``{owner}/{file_id}-…``: the file id in an original's or a thumbnail's key (shared.naming).
_KEY_FILE_ID = re.compile(r"^[^/]+/([0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})-")

_ORDER_SQL = {
    ListingOrder.BINARY: 'e.key COLLATE "C"',
    ListingOrder.SEGMENTS: "string_to_array(e.key, '/') COLLATE \"C\"",
}
# UTF-8 byte order is code-point order, which is how Python compares str.
_ORDER_KEY: dict[ListingOrder, Callable[[str], Any]] = {
    ListingOrder.BINARY: lambda key: key,
    ListingOrder.SEGMENTS: lambda key: key.split("/"),
}

_EXPECTED = """
SELECT e.key, v.file_id, v.version_number, v.status, e.size_px, v.sha256, v.size_bytes
FROM file_versions v
CROSS JOIN LATERAL (
    SELECT v.object_key AS key, NULL::integer AS size_px
    UNION ALL
    SELECT t->>'key', (t->>'size_px')::integer
    FROM jsonb_array_elements(
        CASE jsonb_typeof(v.thumbnails) WHEN 'array' THEN v.thumbnails ELSE '[]'::jsonb END
    ) AS t
) AS e
WHERE e.key IS NOT NULL AND COALESCE(v.bucket, $1) = $1
ORDER BY {order}
"""

_STILL_EXPECTED = """
SELECT v.status, v.object_key = $3 AS original,
       v.thumbnails @> jsonb_build_array(jsonb_build_object('key', $3::text)) AS thumbnail
FROM file_versions v
WHERE v.file_id = $1 AND v.version_number = $2 AND COALESCE(v.bucket, $4) = $4
"""

# Keys among $1 that some version names; {scope} narrows the search to the files $2 (by index).
# Besides originals and thumbnails: a transform's text object (file_texts, migration 0012), and a
# video's HLS playlists and segments (under its master playlist's `<key>.hls/`) and poster
# thumbnails (file_videos, migration 0013; docs/transforms.md), so none is taken for an orphan.
_REFERENCED = """
SELECT v.object_key AS key FROM file_versions v
WHERE v.object_key = ANY($1::text[]) {scope}
UNION
SELECT t->>'key' FROM file_versions v, jsonb_array_elements(v.thumbnails) AS t
WHERE jsonb_typeof(v.thumbnails) = 'array' AND t->>'key' = ANY($1::text[]) {scope}
UNION
SELECT v.text_key FROM file_texts v WHERE v.text_key = ANY($1::text[]) {scope}
UNION
SELECT k FROM file_videos v, unnest($1::text[]) AS k
WHERE v.master_key IS NOT NULL
  AND (starts_with(k, left(v.master_key, length(v.master_key) - length('master.m3u8')))
       OR v.poster @> jsonb_build_array(jsonb_build_object('key', k))) {scope}
"""


def key_file_id(key: str) -> uuid.UUID | None:
    """The file id an object key names (``{owner}/{file_id}-…``), or ``None``."""
    match = _KEY_FILE_ID.match(key)
    return uuid.UUID(match.group(1)) if match else None


ProgressCallback = Callable[[int, int], None]


class _Run:
    def __init__(
        self,
        checks: Any,
        storage: ObjectStore,
        options: ReconcileOptions,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.checks = checks  # the connection for confirmations (asyncpg); the cursor's is another
        self.checks_lock = asyncio.Lock()  # deep checks confirm too: one query at a time on it
        self.storage = storage
        self.options = options
        self.report = ReconcileReport(storage.bucket, options, datetime.now(UTC))
        self.counts = self.report.counts
        self.on_progress = on_progress
        self.pending: list[ObjectInfo] = []
        self.deep_slots = asyncio.Semaphore(options.deep_concurrency)
        self.tasks: asyncio.TaskGroup | None = None

    async def listing(self) -> AsyncIterator[ObjectInfo]:
        order_key = _ORDER_KEY[self.options.listing_order]
        previous: Any = None
        try:
            async for info in self.storage.list_objects():
                current = order_key(info.key)
                if previous is not None and current < previous:
                    self.counts["out_of_order_keys"] += 1
                previous = current
                self.counts["objects_listed"] += 1
                self.counts["bytes_listed"] += info.size_bytes
                if self.on_progress and self.counts["objects_listed"] % _PROGRESS_EVERY == 0:
                    self.on_progress(self.counts["objects_listed"], self.counts["keys_expected"])
                yield info
        except botocore.exceptions.ClientError as exc:
            bucket = self.storage.bucket
            raise PermanentError(f"cannot list the bucket: {exc}", bucket=bucket) from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            bucket = self.storage.bucket
            raise StorageUnavailable(f"S3 unreachable: {exc!r}", bucket=bucket) from exc

    async def merge(self, objects: AsyncIterator[ObjectInfo], expected: AsyncIterator[Any]) -> None:
        order_key = _ORDER_KEY[self.options.listing_order]
        obj = await anext(objects, None)
        row = await anext(expected, None)
        while obj is not None or row is not None:
            if row is None or (obj is not None and order_key(obj.key) < order_key(row["key"])):
                assert obj is not None
                await self.unnamed(obj)
                obj = await anext(objects, None)
            elif obj is None or order_key(row["key"]) < order_key(obj.key):
                self.expect(row)
                await self.unlisted(row)
                row = await anext(expected, None)
            else:
                while row is not None and row["key"] == obj.key:
                    self.expect(row)
                    await self.matched(row, obj)
                    row = await anext(expected, None)
                obj = await anext(objects, None)
        await self.flush_orphans()

    def expect(self, row: Any) -> None:
        """Count an expected key as the merge consumes it."""
        self.counts["keys_expected"] += 1
        if row["size_px"] is None and row["status"] == FileStatus.CORRUPTED:
            self.counts["already_corrupted"] += 1

    async def matched(self, row: Any, info: ObjectInfo) -> None:
        if row["size_px"] is not None or row["status"] not in IN_BUCKET:
            return
        self.counts["originals_checked"] += 1
        if info.size_bytes != row["size_bytes"]:
            self.report.checksum_mismatches.add(_mismatch(row, "size", info.size_bytes, None))
        elif self.options.deep and self.tasks is not None:
            await self.deep_slots.acquire()
            self.tasks.create_task(self.deep_check(row))

    async def deep_check(self, row: Any) -> None:
        try:
            digest, size = hashlib.sha256(), 0
            try:
                async with self.storage.open_stream(row["key"]) as (_, chunks):
                    async for chunk in chunks:
                        digest.update(chunk)
                        size += len(chunk)
            except SourceMissing:
                await self.confirm_missing(row)
                return
            self.counts["deep_checked"] += 1
            if digest.hexdigest() != row["sha256"]:
                mismatch = _mismatch(row, "sha256", size, digest.hexdigest())
                self.report.checksum_mismatches.add(mismatch)
        finally:
            self.deep_slots.release()

    async def unlisted(self, row: Any) -> None:
        """An expected key the listing passed: missing, unless a HEAD finds it after all."""
        if row["status"] not in IN_BUCKET:
            return  # not expected in the bucket (e.g. already marked corrupted)
        info = await self.storage.head(row["key"])
        if info is not None:
            await self.matched(row, info)
        else:
            await self.confirm_missing(row)

    async def confirm_missing(self, row: Any) -> None:
        try:
            async with self.checks_lock:
                fresh = await self.checks.fetchrow(
                    _STILL_EXPECTED,
                    row["file_id"],
                    row["version_number"],
                    row["key"],
                    self.storage.bucket,
                )
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot read a version: {exc!r}", key=row["key"]) from exc
        thumbnail = row["size_px"] is not None
        if fresh is None or fresh["status"] not in IN_BUCKET:
            return  # deleted, or its status changed, while the run went on
        if not (fresh["thumbnail"] if thumbnail else fresh["original"]):
            return
        found = MissingObject(
            row["file_id"], row["version_number"], row["key"], fresh["status"], row["size_px"]
        )
        (self.report.missing_thumbnails if thumbnail else self.report.missing_objects).add(found)

    async def unnamed(self, info: ObjectInfo) -> None:
        """A listed key the expected stream passed: an orphan candidate, looked up in batches."""
        self.pending.append(info)
        if len(self.pending) >= _ORPHAN_BATCH:
            await self.flush_orphans()

    async def flush_orphans(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        ids = [key_file_id(info.key) for info in batch]
        named = [info.key for info, file_id in zip(batch, ids, strict=True) if file_id]
        foreign = [info.key for info, file_id in zip(batch, ids, strict=True) if not file_id]
        known = list({file_id for file_id in ids if file_id is not None})
        scoped = _REFERENCED.format(scope="AND v.file_id = ANY($2::uuid[])")
        try:
            async with self.checks_lock:
                rows = await self.checks.fetch(scoped, named, known) if named else []
                if foreign:  # names no file: one scan of every version for the batch
                    rows += await self.checks.fetch(_REFERENCED.format(scope=""), foreign)
                file_rows = await self.checks.fetch(
                    "SELECT file_id, status FROM files WHERE file_id = ANY($1::uuid[])", known
                )
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot look up orphan candidates: {exc!r}") from exc
        referenced = {r["key"] for r in rows}
        statuses = {r["file_id"]: r["status"] for r in file_rows}
        grace_s = self.options.grace.total_seconds()
        for info, file_id in zip(batch, ids, strict=True):
            if info.key in referenced:
                continue  # recorded meanwhile, or met out of order and checked on the DB side
            if statuses.get(file_id) == FileStatus.DELETED:
                # Its purge is queued or retrying (docs/gdpr.md): neither an orphan nor a loss.
                self.counts["deleted_awaiting_purge"] += 1
                continue
            modified = info.last_modified
            age_s = (self.report.started_at - modified).total_seconds() if modified else 0.0
            if modified is None or age_s < grace_s:
                self.counts["young_objects_skipped"] += 1  # maybe a store in flight: not touched
                continue
            orphan = Orphan(info.key, info.size_bytes, modified, age_s, statuses.get(file_id))
            if self.options.delete_orphans_older_than is not None:
                orphan = await self.maybe_delete(orphan, self.options.delete_orphans_older_than)
            self.report.orphans.add(orphan)
            self.counts["orphan_bytes"] += orphan.size_bytes

    async def maybe_delete(self, orphan: Orphan, older_than: timedelta) -> Orphan:
        if orphan.key.startswith(QUARANTINE_PREFIX):
            return replace(orphan, kept="quarantined by a rescan: never deleted by reconcile")
        if orphan.file_status is not None and orphan.file_status not in FINAL:
            return replace(orphan, kept=f"file in progress ({orphan.file_status})")
        if orphan.age_s < older_than.total_seconds():
            return replace(orphan, kept="younger than the deletion threshold")
        now = await self.storage.head(orphan.key)
        if now is None or now.last_modified is None:
            return replace(orphan, kept="gone before deletion")
        if datetime.now(UTC) - now.last_modified < older_than:
            return replace(orphan, kept="rewritten since it was listed")
        await self.storage.delete(orphan.key)
        self.report.deleted.add(orphan)
        self.counts["deleted_bytes"] += orphan.size_bytes
        return orphan


def _mismatch(
    row: Any, check: Literal["size", "sha256"], size: int, sha256: str | None
) -> ContentMismatch:
    return ContentMismatch(
        row["file_id"],
        row["version_number"],
        row["key"],
        row["status"],
        check,
        row["size_bytes"],
        size,
        row["sha256"],
        sha256,
    )


async def reconcile(
    pool: Any,
    storage: ObjectStore,
    options: ReconcileOptions,
    on_progress: ProgressCallback | None = None,
) -> ReconcileReport:
    """Check ``storage``'s bucket against the versions in ``pool``'s database (seed 004).

    Reads only, unless ``options.delete_orphans_older_than`` is set (see the module docstring).
    ``pool`` (asyncpg) must allow two connections: one holds the cursor in a read-only
    transaction for the whole run, the other confirms candidates. ``on_progress(objects
    listed, keys expected so far)`` is called every 250 listed objects.

    Raises:
        ValueError: the pool allows a single connection, or the database does not store UTF-8.
        StorageUnavailable: S3 down, timed out, 5xx.
        PermanentError: S3 refused (e.g. no such bucket; a :class:`SourceMissing`), or a
            store that cannot be listed.
        DatabaseUnavailable: PostgreSQL failed during a confirmation.
    """
    if pool.get_max_size() < 2:
        raise ValueError("reconcile needs a pool of at least two connections")
    await storage.ping()
    async with pool.acquire() as cursor_connection, pool.acquire() as checks:
        if await checks.fetchval("SHOW server_encoding") != "UTF8":
            raise ValueError('the merge needs a UTF-8 database (COLLATE "C" = UTF-8 byte order)')
        run = _Run(checks, storage, options, on_progress)
        run.counts["versions_in_other_buckets"] = await checks.fetchval(
            "SELECT count(*) FROM file_versions WHERE bucket IS NOT NULL AND bucket <> $1",
            storage.bucket,
        )
        sql = _EXPECTED.format(order=_ORDER_SQL[options.listing_order])
        async with cursor_connection.transaction(readonly=True):
            cursor = cursor_connection.cursor(sql, storage.bucket, prefetch=1000)
            expected = _database_errors(cursor.__aiter__())
            try:
                async with asyncio.TaskGroup() as tasks:
                    run.tasks = tasks
                    await run.merge(run.listing(), expected)
            except BaseExceptionGroup as group:
                raise _first(group) from None
    run.report.finished_at = datetime.now(UTC)
    if on_progress:
        on_progress(run.counts["objects_listed"], run.counts["keys_expected"])
    return run.report


async def _database_errors(rows: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        async for row in rows:
            yield row
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"the expected keys' cursor failed: {exc!r}") from exc


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
