"""What a storage reconciliation reports (:class:`ReconcileReport`), and what it was asked to do
(:class:`ReconcileOptions`); seed 004.

Reported:

- **missing objects**: a version whose status says its bytes are stored (``stored``,
  ``available``: :data:`~shared.status.IN_BUCKET`) and whose ``object_key`` is not in the
  bucket; **missing thumbnails**: the same for a key listed in the version's ``thumbnails``;
- **orphans**: objects that no version names, neither as ``object_key`` nor as a thumbnail
  key, older than the grace period (the store uploads before the commit stage records the key,
  so a young unnamed object may be a store in flight: never reported, never touched);
- **checksum mismatches**: an original whose size differs from the version's ``size_bytes``
  (always, the listing gives it for free) or, with ``deep``, whose bytes re-read from the
  bucket do not hash to the version's SHA-256;
- **deleted**: the orphans removed, when a deletion was asked for.

Versions already ``corrupted`` are not expected in the bucket: never reported again, only counted
(``already_corrupted``, their originals). Each kind keeps at most ``max_findings`` entries; its
count stays exact.

The run that fills a report is :func:`shared.ops.reconcile.scan.reconcile`; the fix that marks
its findings ``corrupted`` is :func:`shared.ops.reconcile.fix.mark_corrupted`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")

#: The run's counters, all exact (:attr:`ReconcileReport.counts`).
COUNTERS = (
    "objects_listed",  # every object of the bucket
    "bytes_listed",
    "keys_expected",  # rows of the DB stream: originals and thumbnails of this bucket's versions
    "originals_checked",  # stored originals found, their size compared
    "deep_checked",  # stored originals re-read and hashed (deep)
    "young_objects_skipped",  # unnamed objects younger than the grace period
    "orphan_bytes",
    "deleted_bytes",
    "out_of_order_keys",  # listed keys that broke the chosen listing order
    "versions_in_other_buckets",  # versions whose bucket is another one: not checked
    "already_corrupted",  # versions marked corrupted before the run: not checked again
    "deleted_awaiting_purge",  # objects of deleted files the purge worker has not removed yet
)


class ListingOrder(StrEnum):
    """The order the store lists keys in: ``binary`` (the S3 API: UTF-8 bytes; AWS S3, MinIO)
    or ``segments`` (``/``-separated segments compared one by one; SeaweedFS)."""

    BINARY = "binary"
    SEGMENTS = "segments"


@dataclass(frozen=True)
class ReconcileOptions:
    """What a run checks and may do.

    Raises:
        ValueError: ``delete_orphans_older_than`` shorter than ``grace``, a negative duration,
            ``max_findings`` or ``deep_concurrency`` below 1.
    """

    grace: timedelta = timedelta(hours=1)
    delete_orphans_older_than: timedelta | None = None
    deep: bool = False
    listing_order: ListingOrder = ListingOrder.BINARY
    max_findings: int = 10_000
    deep_concurrency: int = 4

    def __post_init__(self) -> None:
        if self.grace < timedelta(0):
            raise ValueError("the grace period cannot be negative")
        older = self.delete_orphans_older_than
        if older is not None and older < self.grace:
            raise ValueError(
                f"orphans younger than the grace period ({self.grace}) are never deleted: "
                f"the deletion threshold ({older}) must be at least as long"
            )
        if self.max_findings < 1 or self.deep_concurrency < 1:
            raise ValueError("max_findings and deep_concurrency must be at least 1")


@dataclass(frozen=True)
class MissingObject:
    """A version's original (``size_px is None``) or thumbnail that is not in the bucket."""

    file_id: uuid.UUID
    version_number: int
    key: str
    status: str
    size_px: int | None = None


@dataclass(frozen=True)
class Orphan:
    """An object no version names. ``age_s``: seconds since its LastModified at the run's start;
    ``file_status``: the status of the file its key names, if recorded; ``kept``: why a deletion
    that was asked for did not happen."""

    key: str
    size_bytes: int
    last_modified: datetime
    age_s: float
    file_status: str | None = None
    kept: str | None = None


@dataclass(frozen=True)
class ContentMismatch:
    """An original whose size (``check="size"``) or SHA-256 (``check="sha256"``, deep) is not
    the version's; ``actual_sha256`` is ``None`` for a size check."""

    file_id: uuid.UUID
    version_number: int
    key: str
    status: str
    check: Literal["size", "sha256"]
    expected_size_bytes: int
    actual_size_bytes: int
    expected_sha256: str
    actual_sha256: str | None


@dataclass
class Findings(Generic[T]):
    """Findings of one kind: ``total`` exact, ``items`` at most ``limit`` of them."""

    limit: int
    items: list[T] = field(default_factory=list)
    total: int = 0

    def add(self, item: T) -> None:
        self.total += 1
        if len(self.items) < self.limit:
            self.items.append(item)


@dataclass
class ReconcileReport:
    """The outcome of a run (:func:`~shared.ops.reconcile.scan.reconcile`): the findings of
    each kind and the :data:`COUNTERS`."""

    bucket: str
    options: ReconcileOptions
    started_at: datetime
    finished_at: datetime | None = None
    missing_objects: Findings[MissingObject] = field(init=False)
    missing_thumbnails: Findings[MissingObject] = field(init=False)
    orphans: Findings[Orphan] = field(init=False)
    checksum_mismatches: Findings[ContentMismatch] = field(init=False)
    deleted: Findings[Orphan] = field(init=False)
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        limit = self.options.max_findings
        self.missing_objects, self.missing_thumbnails = Findings(limit), Findings(limit)
        self.orphans, self.deleted = Findings(limit), Findings(limit)
        self.checksum_mismatches = Findings(limit)
        for name in COUNTERS:
            self.counts.setdefault(name, 0)

    def kinds(self) -> dict[str, Findings[Any]]:
        """The findings by their JSON name."""
        return {
            "missing_objects": self.missing_objects,
            "missing_thumbnails": self.missing_thumbnails,
            "orphans": self.orphans,
            "checksum_mismatches": self.checksum_mismatches,
            "deleted": self.deleted,
        }

    @property
    def found(self) -> bool:
        """Anything reported or deleted (the command's exit status 1)."""
        return any(findings.total for findings in self.kinds().values())
