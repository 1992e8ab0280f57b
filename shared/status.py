"""The status of a file version, and the sets of statuses the pipeline decides by.

Only the commit stage writes a status (``files.status``, ``file_versions.status``); every other
reader (the gateway, the scan stage, ``sluice spool clean``, ``sluice reconcile``) compares what
it reads with the sets below, so a status is named once::

    received ─► scanned ─┬───────────────────────┴─► stored ─► available
                         └─► fallback, deferred ─┘   S3 down (PostgreSQL, store DLQ)
    any status before available ─► rejected          infected, unscannable, invalid, abandoned,
                                                     policy
    stored, available ─► corrupted                   the object is lost (seed 004)
    available, corrupted ─► quarantined              a rescan found it infected
    any status ─► deleted                            DELETE /v1/files/{id} (seed 000: GDPR)

The ordering rules (``docs/architecture.md`` § Statuses): a status only moves forward
(:data:`RANK`, higher wins), so events that arrive out of order after a retry never move a file
back; ``rejected`` and ``corrupted`` never change (:data:`TERMINAL`); ``available`` changes only
to ``corrupted`` (seed 004: a stored object found missing or damaged). The commit stage applies
them (``services/commit/handler.py``, ``advance_status``).

A :class:`FileStatus` is a ``str``: it compares equal to the text PostgreSQL returns, so
``row["status"] in FINAL`` needs no conversion.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final


class FileStatus(StrEnum):
    """Where a file version is in the pipeline (column ``status`` of ``files`` and
    ``file_versions``), in rank order."""

    RECEIVED = "received"
    """Spooled (or announced by an upstream service); ``file.received`` recorded."""
    SCANNED = "scanned"
    """clamd found it clean (``file.scanned``)."""
    FALLBACK = "fallback"
    """S3 was down: the bytes are kept Base64 in PostgreSQL until migrated (``file.fallback``)."""
    DEFERRED = "deferred"
    """S3 was down and the file is over the fallback cap: it waits in the store dead-letter
    queue for a replay (``file.deferred``)."""
    STORED = "stored"
    """The original is in the bucket, its SHA-256 checked by S3 (``file.stored``)."""
    AVAILABLE = "available"
    """Stored, thumbnails made or not needed (``file.thumbnailed``): the pipeline is done."""
    REJECTED = "rejected"
    """Infected, unscannable, invalid, abandoned or outside the upload policy
    (``file.rejected``): never stored."""
    CORRUPTED = "corrupted"
    """The stored object was found missing or damaged, by a read or by ``sluice reconcile
    --fix`` (``file.corrupted``, seed 004)."""
    QUARANTINED = "quarantined"
    """A rescan found the stored bytes infected (``file.quarantined``): the objects are under
    the quarantine prefix, never served, never deleted silently."""
    DELETED = "deleted"
    """Its owner deleted it (``file.deleted``, seed 000: GDPR deletion): its bytes are purged,
    its history keeps only that a deletion happened (docs/gdpr.md)."""


#: Status → rank: a status only moves to a higher rank. ``fallback`` and ``deferred`` sit
#: between ``scanned`` and ``stored`` (S3 has not got the bytes yet); ``available`` and
#: ``rejected`` share a rank, so the first of them to arrive stays; ``corrupted`` outranks
#: ``available``.
RANK: Final[Mapping[FileStatus, int]] = {
    FileStatus.RECEIVED: 1,
    FileStatus.SCANNED: 2,
    FileStatus.FALLBACK: 3,
    FileStatus.DEFERRED: 3,
    FileStatus.STORED: 4,
    FileStatus.AVAILABLE: 5,
    FileStatus.REJECTED: 5,
    FileStatus.CORRUPTED: 6,
    FileStatus.QUARANTINED: 7,
    FileStatus.DELETED: 8,
}

#: The pipeline's outcomes: its work on the version is over. The commit stage answers them with
#: ``file.committed`` and removes the spooled bytes; ``sluice spool clean`` and ``sluice
#: reconcile --delete-orphans-older-than`` may remove what such a file left behind. Any other
#: status is in flight, or waiting in a dead-letter queue or the fallback: its bytes are
#: still needed.
FINAL: Final = frozenset({FileStatus.AVAILABLE, FileStatus.REJECTED})

#: Statuses that never change again.
TERMINAL: Final = frozenset(
    {FileStatus.REJECTED, FileStatus.CORRUPTED, FileStatus.QUARANTINED, FileStatus.DELETED}
)

#: Every status after ``received``: the scan stage's verdict is recorded (only a clean scan
#: leads to ``fallback``, ``deferred``, ``stored`` and on; ``rejected`` is a verdict). A
#: ``file.received`` redelivered for such a version has nothing left to do.
PAST_SCANNING: Final = frozenset(FileStatus) - {FileStatus.RECEIVED}

#: Statuses whose original (and thumbnails) must be in the bucket: what ``sluice reconcile``
#: checks, and what ``--fix`` may mark ``corrupted``.
IN_BUCKET: Final = frozenset({FileStatus.STORED, FileStatus.AVAILABLE})

#: Statuses whose event detail is the file's ``status_reason`` (why it was rejected, why it
#: waits, what was lost).
REASONED: Final = frozenset(
    {FileStatus.REJECTED, FileStatus.FALLBACK, FileStatus.DEFERRED, FileStatus.CORRUPTED}
    | {FileStatus.QUARANTINED}
)

#: Statuses whose objects are never served (no presigned URL, no content): lost, or
#: quarantined by a rescan.
UNSERVED: Final = frozenset({FileStatus.CORRUPTED, FileStatus.QUARANTINED})

#: Statuses a file moves on from by itself (neither final nor terminal): one that keeps such a
#: status long after it was received is stuck (``sluice doctor``, ``sluice_files_stuck``).
MOVING: Final = frozenset(FileStatus) - FINAL - TERMINAL
