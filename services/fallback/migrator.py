"""Migration back to S3: fallback rows → S3 (checksum verified) → ``file.stored`` → row deleted.

While rows wait, S3 is probed every ``SLUICE_FALLBACK_PROBE_INTERVAL_S`` (HeadBucket). Once it
answers, rows are migrated oldest first in batches of ``SLUICE_FALLBACK_BATCH_SIZE``, one row
in memory at a time, each under its own row lock (``FOR UPDATE SKIP LOCKED``, so several
fallback workers never migrate the same row):

1. decode the Base64 and check the SHA-256 against the row;
2. store it exactly as the store stage would (:func:`services.store.handler.handle`: the same
   deterministic key, ``ChecksumSHA256`` so S3 refuses other bytes, skipped when the object is
   already there), then HEAD the object and confirm its size and SHA-256;
3. publish that ``file.stored`` (the same ``event_id`` the store stage would have given it)
   and wait for the broker's confirm: thumbnailing and commit go on as for any file;
4. delete the row, and commit.

A crash anywhere loses nothing: the row goes only after S3 holds the bytes and the broker holds
the event. A crash after step 3 leaves the row, and the next batch finds the object already
stored and publishes the same event again, which the commit stage records once. The commit
stage stays the only writer of file state (the brief): the switch of the version from
``fallback`` to ``stored`` is its answer to ``file.stored``.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from pydantic import ValidationError

from services.store import handler as store
from shared.adapters.row_cipher import RowCipher
from shared.errors import ChecksumMismatch, PermanentError, RetryableError, StorageUnavailable
from shared.events import EVENT_ADAPTER, FileScanned, FileStored
from shared.ports import FallbackRow, FallbackStore, FallbackSummary, ObjectStore, PublishEvent
from shared.telemetry import metrics, tracing

log = structlog.get_logger("sluice.fallback")


class RowSource:
    """A :class:`~shared.ports.SourceReader` over one fallback row's decoded bytes."""

    def __init__(self, data: bytes, chunk_bytes: int = 1024 * 1024) -> None:
        self._data = data
        self._chunk_bytes = chunk_bytes

    async def read(self, source: str, *, expected_sha256: str, expected_size: int) -> bytes:
        """The row's bytes (already checked against the row's SHA-256)."""
        if len(self._data) != expected_size:
            raise ChecksumMismatch("fallback row size differs from the event's", source=source)
        return self._data

    async def iter_chunks(self, source: str) -> AsyncIterator[bytes]:
        """The row's bytes in chunks."""
        for start in range(0, len(self._data), self._chunk_bytes):
            yield self._data[start : start + self._chunk_bytes]


@dataclass
class MigrationReport:
    """What one :func:`migrate_batch` did: rows ``migrated``, ``skipped`` (locked by another
    worker or already gone), ``failed`` (error kept on the row), ``migrated_bytes`` (originals'
    bytes); ``stopped`` says why the batch ended early (S3 or the broker went away), else
    ``None``."""

    migrated: int = 0
    skipped: int = 0
    failed: int = 0
    stopped: str | None = None
    migrated_bytes: int = 0


@dataclass(frozen=True)
class Deps:
    """What the migration works through; ``publish`` must return only once confirmed."""

    repository: FallbackStore
    storage: ObjectStore
    publish: PublishEvent
    multipart_threshold_bytes: int
    cipher: RowCipher = field(default_factory=RowCipher.plain)  # SLUICE_FALLBACK_ENCRYPTION_*


def _decode(row: FallbackRow, cipher: RowCipher) -> tuple[FileScanned, bytes]:
    """The row's event and bytes, checked against its size and SHA-256.

    Raises:
        ChecksumMismatch: the row is damaged (not a ``file.scanned``, not Base64, other bytes).
    """
    try:
        event = EVENT_ADAPTER.validate_python(row.event)
        data = cipher.open(
            row.data_base64,
            file_id=row.file_id,
            version_number=row.version_number,
            sha256=row.sha256,
        )
    except (ValidationError, binascii.Error, ValueError) as exc:
        raise ChecksumMismatch(
            f"fallback row is damaged: {exc}", file_id=str(row.file_id)
        ) from None
    if not isinstance(event, FileScanned):
        raise ChecksumMismatch("fallback row does not hold a file.scanned event")
    if len(data) != row.size_bytes or hashlib.sha256(data).hexdigest() != row.sha256:
        raise ChecksumMismatch(
            "fallback row bytes do not match their SHA-256", file_id=str(row.file_id)
        )
    return event, data


async def migrate_row(row: FallbackRow, deps: Deps) -> FileStored:
    """Put one row's bytes in S3, confirm them, publish ``file.stored`` (confirmed), in a span
    ``fallback migrate`` that continues the trace the row was kept in (its ``trace_context``;
    for an older row without one, a trace whose id is the file id); the rest of the file's
    stages continue it.

    Raises:
        StorageUnavailable: S3 went away (the row stays).
        ChecksumMismatch: the row's bytes are damaged, or S3 does not hold what was sent.
        BrokerUnavailable: the ``file.stored`` publish was not confirmed (the row stays).
    """
    with tracing.file_span("fallback migrate", row.file_id, row.trace_context):
        return await _migrate(row, deps)


async def _migrate(row: FallbackRow, deps: Deps) -> FileStored:
    event, data = await asyncio.to_thread(_decode, row, deps.cipher)
    sources = RowSource(data)
    answer = await store.handle(
        event,
        store.Deps(
            sources=sources,
            storage=deps.storage,
            multipart_threshold_bytes=deps.multipart_threshold_bytes,
        ),
    )
    stored = answer[0]
    assert isinstance(stored, FileStored)
    info = await deps.storage.head(stored.key)
    if not store.already_stored(info, size_bytes=event.size_bytes, sha256_hex=event.sha256):
        raise ChecksumMismatch(
            "S3 does not hold the migrated bytes with their SHA-256", key=stored.key
        )
    await deps.publish(stored)
    return stored


async def migrate_batch(deps: Deps, limit: int) -> MigrationReport:
    """Migrate up to ``limit`` rows, oldest first (see the module docstring).

    A row that cannot be migrated for a reason of its own (damaged bytes) keeps its error and
    attempt count and the batch goes on; S3 or the broker going away ends the batch.

    Raises:
        DatabaseUnavailable: PostgreSQL went away (nothing is lost: rows stay).
    """
    report = MigrationReport()
    for file_id, version_number in await deps.repository.oldest(limit):
        async with deps.repository.claim(file_id, version_number) as claimed:
            if claimed is None:
                report.skipped += 1
                continue
            bound = log.bind(file_id=str(file_id), version_number=version_number)
            try:
                stored = await migrate_row(claimed.row, deps)
            except RetryableError as exc:
                report.stopped = f"{type(exc).__name__}: {exc}"
                bound.warning("migration stopped", error=report.stopped)
                break
            except PermanentError as exc:
                report.failed += 1
                bound.error("migration of a fallback row failed", error=str(exc))
                failure = f"{type(exc).__name__}: {exc}"
            else:
                await claimed.delete()
                report.migrated += 1
                report.migrated_bytes += claimed.row.size_bytes
                bound.info("migrated to S3", key=stored.key)
                continue
        await deps.repository.record_failure(file_id, version_number, failure)
    return report


async def publish_gauges(repository: FallbackStore) -> FallbackSummary:
    """Set the fallback and corrupted gauges (``shared.telemetry.metrics``) from PostgreSQL;
    return the summary.

    Raises:
        DatabaseUnavailable: PostgreSQL unreachable.
    """
    summary = await repository.summary()
    metrics.FALLBACK_VERSIONS.set(summary.versions)
    metrics.FALLBACK_BYTES.set(summary.bytes)
    metrics.FALLBACK_TABLE_BYTES.set(summary.stored_bytes)
    age = (datetime.now(UTC) - summary.oldest).total_seconds() if summary.oldest else 0.0
    metrics.FALLBACK_OLDEST_AGE.set(max(age, 0.0))
    metrics.CORRUPTED_VERSIONS.set(await repository.corrupted_count())
    return summary


async def run_migrations(
    deps: Deps,
    *,
    probe: Callable[[], Awaitable[None]],
    interval_s: float,
    batch_size: int,
    stop: asyncio.Event,
) -> None:
    """Probe S3 every ``interval_s`` while rows wait; migrate in batches once it answers.

    Each tick also refreshes the gauges (:func:`publish_gauges`). Runs until ``stop`` is set;
    every error is logged and the loop goes on at the next tick.
    """
    while not stop.is_set():
        try:
            summary = await publish_gauges(deps.repository)
            if summary.versions:
                await probe()
                while not stop.is_set():
                    report = await migrate_batch(deps, batch_size)
                    log.info(
                        "migration batch",
                        migrated=report.migrated,
                        migrated_bytes=report.migrated_bytes,
                        failed=report.failed,
                        skipped=report.skipped,
                        stopped=report.stopped,
                    )
                    if report.stopped or report.migrated == 0:
                        break
        except StorageUnavailable as exc:
            log.info("S3 still unavailable; fallback rows wait", error=str(exc))
        except Exception as exc:
            log.warning("fallback migration tick failed", error=repr(exc))
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            pass
