"""The scan stage: ``file.received`` → clamd verdict → ``file.scanned`` or ``file.rejected``.

The bytes are read through the source reader, which checks them against the event's size and
SHA-256 first, so what clamd scans is exactly what the event announced and what the store stage
will upload (the store re-checks the same SHA-256, and S3 verifies it again).

Outcomes:

- clean → ``file.scanned`` with the engine and signature database versions;
- infected → ``file.rejected`` (reason ``infected``); infected bytes never reach the bucket
  (seed 000: antivirus scan). The commit stage removes the spooled bytes once the rejection is
  recorded (removing them here, before ``file.rejected`` is confirmed, would lose the file if
  the worker died in between). An ``s3://`` source belongs to the upstream service that wrote it
  and is left alone;
- not scannable whole (clamd's alerts for an encrypted archive or PDF and for a file past its
  scan limits, :attr:`~shared.adapters.scanner.ScanVerdict.unscannable`) → ``file.rejected``
  (reason ``unscannable``), like an infected file: what clamd could not look into is not passed
  on as clean;
- bytes that do not match the event → :class:`~shared.errors.ChecksumMismatch`, dead-lettered
  at once rather than rejected: a mismatch is a fault upstream (or on the spool) to fix and
  replay, not a verdict on the file;
- source gone: spooled bytes are only removed once the file's final state is recorded (or by
  the gateway when it answered 503). So when the version's recorded status shows it is past
  scanning (:data:`~shared.status.PAST_SCANNING`: any status but ``received``, ``fallback``,
  ``deferred`` and ``corrupted`` included), this is a late redelivery (an ack lost to a crash)
  and there is nothing left to do; when the gateway left an ``.abandoned`` tombstone (it
  answered 503, yet the broker had taken the event), the file is rejected as abandoned;
  otherwise :class:`~shared.errors.SourceMissing` is dead-lettered;
- clamd unreachable or without a verdict → :class:`~shared.errors.ScannerUnavailable`, retried.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from shared.adapters.spool import SCHEME as SPOOL_SCHEME
from shared.errors import SourceMissing
from shared.events import BaseEvent, FileRejected, FileScanned
from shared.ports import FileStates, Scanner, SourceReader, Spool
from shared.status import PAST_SCANNING

log = structlog.get_logger("sluice.scan")


@dataclass(frozen=True)
class Deps:
    """What the scan stage works through."""

    sources: SourceReader
    scanner: Scanner
    states: FileStates
    spool: Spool


async def handle(event: BaseEvent, deps: Deps) -> list[BaseEvent]:
    """Scan the event's source; return its ``file.scanned`` or ``file.rejected``.

    Emitted events answer ``event`` (:meth:`~shared.events.BaseEvent.follow`), so a redelivery
    yields the same event ids.

    Raises:
        ChecksumMismatch: the source does not match the event's size or SHA-256.
        SourceMissing: the source is gone. InvalidSource: a reference that is not allowed.
        ScannerUnavailable: clamd gave no verdict (retried). StorageUnavailable: S3 down.
    """
    try:
        data = await deps.sources.read(
            event.source, expected_sha256=event.sha256, expected_size=event.size_bytes
        )
    except SourceMissing:
        if event.source.startswith(SPOOL_SCHEME):
            status = await deps.states.status(event.file_id, event.version_number)
            if status in PAST_SCANNING:
                log.info("late redelivery; file already past scanning", status=status)
                return []
            if await deps.spool.is_abandoned(event.source):
                return [
                    event.follow(
                        FileRejected,
                        reason="abandoned",
                        detail="abandoned: the gateway could not confirm the upload and "
                        "answered 503; the client was told nothing was accepted",
                    )
                ]
        raise
    verdict = await deps.scanner.scan(data)
    if not verdict.clean:
        signature = (verdict.signature or "unknown")[:255]
        if verdict.unscannable is not None:
            return [
                event.follow(
                    FileRejected,
                    reason="unscannable",
                    detail=f"{verdict.unscannable} ({signature})",
                    signature=signature,
                )
            ]
        return [
            event.follow(
                FileRejected,
                reason="infected",
                detail=f"infected: {signature}",
                signature=signature,
            )
        ]
    engine, database = await deps.scanner.version()
    return [event.follow(FileScanned, scanner=engine, signature_version=database)]
