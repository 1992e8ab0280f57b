"""The scan stage: ``file.received`` → clamd verdict and upload policy → ``file.scanned`` or
``file.rejected``.

The bytes are read through the source reader, which checks them against the event's size and
SHA-256 first, so what clamd scans is exactly what the event announced and what the store stage
will upload (the store re-checks the same SHA-256, and S3 verifies it again).

Every file meets the upload policy here (``shared.policy``, one policy for every way in): an
upstream service's ``file.received`` never went through the gateway, which applies the same
policy to an upload (a gateway upload passes it again, unchanged). Before the bytes are read,
the name is cleaned and the size checked against the limit of the type the name claims, and the
metadata against its cap; once they are read, libmagic sniffs their type, which must agree with
the name's extension. The content type every later event carries, the one the object is stored
and served with and the one recorded, is that sniffed type, never the event's claim.

Outcomes:

- clean and within the policy → ``file.scanned`` with the engine and signature database
  versions, the sniffed ``content_type`` and the cleaned ``original_name``;
- infected → ``file.rejected`` (reason ``infected``), whatever the type: infected bytes never
  reach the bucket (seed 000: antivirus scan), and malware is reported as such. The commit
  stage removes the spooled bytes once the rejection is recorded (removing them here, before
  ``file.rejected`` is confirmed, would lose the file if the worker died in between). An
  ``s3://`` source belongs to the upstream service that wrote it and is left alone;
- not scannable whole (clamd's alerts for an encrypted archive or PDF and for a file past its
  scan limits, :attr:`~shared.adapters.scanner.ScanVerdict.unscannable`) → ``file.rejected``
  (reason ``unscannable``), like an infected file, whatever the type: what clamd could not look
  into is not passed on as clean;
- outside the policy → ``file.rejected`` (reason ``policy``, the detail says which rule, e.g.
  ``policy: content sniffed as text/html, which is not an accepted type (the name claims
  .jpg)``); a file over its size limit is refused without reading its bytes;
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

from services.scan.rescan import rescan
from shared.errors import InvalidEvent, PolicyRefusal, SourceMissing
from shared.events import BaseEvent, FileRejected, FileRescanRequested, FileScanned
from shared.policy import UploadPolicy, sniff
from shared.ports import FileStates, ObjectStore, Scanner, SourceReader, Spool
from shared.status import PAST_SCANNING

log = structlog.get_logger("sluice.scan")


@dataclass(frozen=True)
class Deps:
    """What the scan stage works through."""

    sources: SourceReader
    scanner: Scanner
    states: FileStates
    spool: Spool
    policy: UploadPolicy
    storage: ObjectStore | None = None  # rescans read stored originals (services/scan/rescan.py)


async def handle(event: BaseEvent, deps: Deps) -> list[BaseEvent]:
    """Scan the event's source and check it against the upload policy; return its
    ``file.scanned`` or ``file.rejected``.

    Emitted events answer ``event`` (:meth:`~shared.events.BaseEvent.follow`), so a redelivery
    yields the same event ids.

    Raises:
        ChecksumMismatch: the source does not match the event's size or SHA-256.
        SourceMissing: the source is gone. InvalidSource: a reference that is not allowed.
        ScannerUnavailable: clamd gave no verdict (retried). StorageUnavailable: S3 down.
    """
    if isinstance(event, FileRescanRequested):
        if deps.storage is None:
            raise InvalidEvent("this scan stage has no object store to rescan from")
        return await rescan(event, deps.storage, deps.scanner)
    try:
        name = deps.policy.check_announced(event.original_name, event.size_bytes, event.metadata)
    except PolicyRefusal as refusal:
        return [_refused(event, refusal)]
    try:
        data = await deps.sources.read(
            event.source, expected_sha256=event.sha256, expected_size=event.size_bytes
        )
    except SourceMissing:
        if deps.spool.owns(event.source):
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
    # From here on every event describes the bytes as read: their type, the cleaned name.
    sniffed = sniff(data)
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
                    content_type=sniffed,
                    original_name=name,
                )
            ]
        return [
            event.follow(
                FileRejected,
                reason="infected",
                detail=f"infected: {signature}",
                signature=signature,
                content_type=sniffed,
                original_name=name,
            )
        ]
    try:
        deps.policy.check(name, None, sniffed)
    except PolicyRefusal as refusal:
        return [_refused(event, refusal, content_type=sniffed, original_name=name)]
    engine, database = await deps.scanner.version()
    return [
        event.follow(
            FileScanned,
            scanner=engine,
            signature_version=database,
            content_type=sniffed,
            original_name=name,
        )
    ]


def _refused(event: BaseEvent, refusal: PolicyRefusal, **described: str) -> FileRejected:
    """The ``file.rejected`` (reason ``policy``) of a file outside the upload policy;
    ``described`` replaces fields of the file's description (the sniffed ``content_type``)."""
    log.info("outside the upload policy", rule=refusal.code, detail=refusal.message)
    return event.follow(
        FileRejected, reason="policy", detail=f"policy: {refusal.message}", **described
    )
