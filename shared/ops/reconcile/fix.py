"""``sluice reconcile --fix``: versions whose original is missing or damaged marked
``corrupted`` (seed 004: "a periodic reconcile --report-only / --fix that marks DB orphans
corrupted").

Only the commit stage writes file state (the brief), so a fix is a published ``file.corrupted``,
never a write to the tables. The findings come from :func:`shared.ops.reconcile.scan.reconcile`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pydantic

from shared.adapters.db import CONNECTION_ERRORS
from shared.errors import BrokerUnavailable, DatabaseUnavailable
from shared.events import FileCorrupted, version_description
from shared.ops.reconcile.report import ContentMismatch, MissingObject, ReconcileReport
from shared.status import IN_BUCKET

_DESCRIBE = """
SELECT f.owner, f.received_at, f.original_name, f.content_type, f.kind, f.metadata,
       v.source, v.size_bytes, v.sha256, v.status, v.bucket, v.object_key
FROM files f
JOIN file_versions v ON v.file_id = f.file_id AND v.version_number = $2
WHERE f.file_id = $1
"""

#: Publishes one event and returns once the broker confirmed it (``Publisher.publish``).
Publish = Callable[[FileCorrupted], Awaitable[None]]


@dataclass(frozen=True)
class FixOutcome:
    """One finding :func:`mark_corrupted` handled: ``detail`` is the ``file.corrupted`` text,
    ``event_id`` the event published (``None`` if none was), ``reason`` why it was not."""

    file_id: uuid.UUID
    version_number: int
    key: str
    detail: str
    event_id: uuid.UUID | None = None
    reason: str | None = None


@dataclass
class FixResult:
    """The outcome of :func:`mark_corrupted`.

    ``total``: versions the report found to mark (missing originals and content mismatches;
    exact, also past ``max_findings``). ``marked``: ``file.corrupted`` published and confirmed.
    ``skipped``: not as reported any more when re-read (deleted, status or key changed).
    ``failed``: not marked: an event the version's row cannot make, or the publish the broker
    did not confirm, which stops the run (``error``).
    """

    total: int
    marked: list[FixOutcome] = field(default_factory=list)
    skipped: list[FixOutcome] = field(default_factory=list)
    failed: list[FixOutcome] = field(default_factory=list)
    error: str | None = None

    @property
    def left(self) -> int:
        """Findings not handled: past ``max_findings`` (not listed), or after ``error``."""
        return self.total - len(self.marked) - len(self.skipped) - len(self.failed)


async def mark_corrupted(report: ReconcileReport, pool: Any, publish: Publish) -> FixResult:
    """Mark the version of every listed missing original and content mismatch in ``report``
    ``corrupted``, by publishing its ``file.corrupted`` (seed 004: "marks DB orphans
    corrupted"). Missing thumbnails are left as reported.

    Writes nothing itself: the commit stage records the event (version and file status
    ``corrupted``, the detail as ``status_reason``). Each version is re-read first (one query on
    ``pool``, asyncpg with jsonb decoded, :func:`shared.adapters.db.create_pool`) and skipped unless
    it is still stored (``stored``, ``available``: :data:`~shared.status.IN_BUCKET`) under the
    reported bucket and key. The event id is derived from the file, version and key
    (:meth:`FileCorrupted.about`), so marking twice, or after the gateway found the same loss,
    records it once. ``publish`` returns once the broker confirmed; the first
    :class:`BrokerUnavailable` it raises stops the run (:attr:`FixResult.error`, the rest counted
    in :attr:`FixResult.left`).

    Raises:
        DatabaseUnavailable: PostgreSQL failed while re-reading a version.
    """
    findings: list[tuple[MissingObject | ContentMismatch, str]] = [
        (missing, "object missing (reconcile)") for missing in report.missing_objects.items
    ]
    findings += [(c, _mismatch_detail(c)) for c in report.checksum_mismatches.items]
    result = FixResult(report.missing_objects.total + report.checksum_mismatches.total)
    for finding, detail in findings:
        outcome = FixOutcome(finding.file_id, finding.version_number, finding.key, detail)
        try:
            row = await pool.fetchrow(_DESCRIBE, finding.file_id, finding.version_number)
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot read a version: {exc!r}", key=finding.key) from exc
        if changed := _changed_since(row, finding.key, report.bucket):
            result.skipped.append(replace(outcome, reason=changed))
            continue
        try:
            event = FileCorrupted.about(
                version_description(row, finding.file_id, finding.version_number),
                bucket=report.bucket,
                key=finding.key,
                detail=detail,
            )
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            reason = f"cannot make file.corrupted from the row: {where}: {first['msg']}"
            result.failed.append(replace(outcome, reason=reason))
            continue
        try:
            await publish(event)
        except BrokerUnavailable as exc:
            result.failed.append(replace(outcome, reason=str(exc)))
            result.error = str(exc)
            break
        result.marked.append(replace(outcome, event_id=event.event_id))
    return result


def _mismatch_detail(mismatch: ContentMismatch) -> str:
    if mismatch.check == "sha256":
        return "SHA-256 differs (reconcile --deep)"
    return (
        f"size {mismatch.actual_size_bytes} B, recorded {mismatch.expected_size_bytes} B "
        "(reconcile)"
    )


def _changed_since(row: Any, key: str, bucket: str) -> str | None:
    """Why the version ``row`` is no longer to be marked, or ``None`` if it still is."""
    if row is None:
        return "version deleted since the check"
    if row["status"] not in IN_BUCKET:
        return f"status is {row['status']} now"
    if row["object_key"] != key or (row["bucket"] or bucket) != bucket:
        return "object key changed since the check"
    return None
