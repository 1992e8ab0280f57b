"""Cleaning the spool of what no stage will ever come back for.

The commit stage removes a file's spooled bytes once its final state is recorded, so in normal
operation the spool holds only files in flight. What can stay behind:

- ``<name>.partial``: an upload the gateway never finished (it died mid-request; in the
  quarantine bucket, an incomplete multipart upload whose abort S3 did not answer);
- ``<name>.abandoned``: the tombstone of an upload answered with 503 (``shared/adapters/spool.py``),
  needed only while the event that might have escaped could still arrive;
- ``<name>``: bytes whose ``file.received`` was never published (the gateway died between
  spooling and publishing), or a file already final whose removal failed. Bytes whose event
  waits in the gateway's outbox (``.outbox/``, a directory this module leaves alone) are kept.

:func:`clean_spool` removes such entries once they are older than a threshold, and never the
bytes of a file that is in flight or waiting in a dead-letter queue (its version's recorded
status is not :data:`~shared.status.FINAL`: anything but ``available`` or ``rejected``): those
are still needed for a replay or a repair.

:func:`clean_spool` cleans the local directory, :func:`clean_quarantine` the S3 quarantine
bucket (``SLUICE_SPOOL_BACKEND=s3``), by the same rules: there an incomplete multipart upload is
aborted, and an object is deleted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shared.adapters.quarantine import QuarantineEntry, QuarantineSpool
from shared.adapters.spool import LocalSpool
from shared.naming import parse_spool_name
from shared.ports import FileStates
from shared.status import FINAL, FileStatus

EntryKind = Literal["file", "partial", "abandoned", "unknown"]


@dataclass(frozen=True)
class SpoolEntry:
    """One entry of the spool directory."""

    name: str
    kind: EntryKind
    age_s: float
    size_bytes: int
    status: str | None = None  # the version's recorded status, for ``file`` entries


@dataclass
class CleanReport:
    """What :func:`clean_spool` removed (or would remove, in a dry run) and what it kept."""

    removed: list[SpoolEntry] = field(default_factory=list)
    kept: list[SpoolEntry] = field(default_factory=list)


def _kind(name: str) -> tuple[EntryKind, str]:
    for suffix, kind in ((".partial", "partial"), (".abandoned", "abandoned")):
        if name.endswith(suffix):
            return kind, name.removesuffix(suffix)  # type: ignore[return-value]
    return "file", name


def _file_id(base: str) -> tuple[uuid.UUID, int] | None:
    """``(file_id, version_number)`` of a spool entry's name (``shared.naming.spool_name``)."""
    return parse_spool_name(base)


async def clean_spool(
    root: Path,
    states: FileStates,
    *,
    older_than_s: float,
    dry_run: bool = False,
    waiting: Collection[str] = (),
) -> CleanReport:
    """Remove stale spool entries older than ``older_than_s`` seconds (by modification time).

    ``waiting`` holds the sources (``spool://<name>``) of events still in the gateway's outbox
    (:meth:`shared.adapters.outbox.EventOutbox.waiting_sources`): their bytes always stay, since
    no stage has seen their ``file.received`` yet.

    Removed: ``.partial`` and ``.abandoned`` entries; bytes of a file whose version is final or
    was never recorded. Kept whatever its age: bytes of a version whose status is not final
    (in flight, dead-lettered and waiting for a replay, in the S3-outage fallback, or
    ``corrupted``), and names
    that are not Sluice's (reported as ``unknown``).

    Raises:
        DatabaseUnavailable: the version statuses cannot be read.
    """
    now = time.time()
    paths = await asyncio.to_thread(lambda: sorted(p for p in root.iterdir() if p.is_file()))
    found: list[_Found] = []
    for path in paths:
        try:
            stat = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            continue  # removed meanwhile by the pipeline

        async def remove(path: Path = path) -> None:
            await asyncio.to_thread(path.unlink, missing_ok=True)

        found.append(_Found(path.name, now - stat.st_mtime, stat.st_size, remove))
    return await _clean(found, LocalSpool.reference, states, older_than_s, dry_run, waiting)


async def clean_quarantine(
    quarantine: QuarantineSpool,
    states: FileStates,
    *,
    older_than_s: float,
    dry_run: bool = False,
    waiting: Collection[str] = (),
) -> CleanReport:
    """:func:`clean_spool` for the S3 quarantine bucket: ``waiting`` holds ``quarantine://``
    sources; an incomplete multipart upload is a ``.partial`` entry (aborted), an object's age
    is from its ``LastModified``.

    Raises:
        DatabaseUnavailable: the version statuses cannot be read.
        QuarantineUnavailable: S3 down.
    """
    found: list[_Found] = []
    for item in await quarantine.entries():

        async def remove(item: QuarantineEntry = item) -> None:
            await quarantine.remove_entry(item)

        found.append(_Found(item.name, item.age_s, item.size_bytes, remove))
    return await _clean(found, quarantine.reference, states, older_than_s, dry_run, waiting)


@dataclass(frozen=True)
class _Found:
    """An entry as listed, and how to remove it."""

    name: str
    age_s: float
    size_bytes: int
    remove: Callable[[], Awaitable[None]]


async def _clean(
    found: list[_Found],
    reference: Callable[[str], str],
    states: FileStates,
    older_than_s: float,
    dry_run: bool,
    waiting: Collection[str],
) -> CleanReport:
    """The rules of :func:`clean_spool` over listed entries; ``reference`` makes a name's
    source reference (to look it up in ``waiting``)."""
    report = CleanReport()
    for listed in found:
        kind, base = _kind(listed.name)
        file_id = _file_id(base)
        entry = SpoolEntry(
            listed.name, kind if file_id else "unknown", listed.age_s, listed.size_bytes
        )
        stale = entry.age_s >= older_than_s
        if entry.kind == "file" and reference(listed.name) in waiting:
            entry = SpoolEntry(entry.name, "file", entry.age_s, entry.size_bytes, "in outbox")
            stale = False
        elif entry.kind == "file" and stale and file_id is not None:
            status = await states.status(*file_id)
            entry = SpoolEntry(entry.name, "file", entry.age_s, entry.size_bytes, status)
            stale = status is None or status in FINAL or status == FileStatus.DELETED
        if not stale or entry.kind == "unknown":
            report.kept.append(entry)
            continue
        if not dry_run:
            await listed.remove()
        report.removed.append(entry)
    return report
