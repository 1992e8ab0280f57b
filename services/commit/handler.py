"""The commit stage's decisions: record each event once, move the file's status forward, commit.

For every ``file.*`` event, in ONE PostgreSQL transaction (:class:`FileRepository`):

1. the event joins ``file_events`` (its ``event_id`` is the idempotency key); an event already
   there is a duplicate (RabbitMQ: at-least-once delivery) and changes nothing;
2. ``files`` and ``file_versions`` are upserted; the status only moves forward
   (:func:`advance_status`), because after retries events may arrive out of order;
3. a final event (``file.thumbnailed`` → ``available``, ``file.rejected`` → ``rejected``)
   also records its ``file.committed`` answer, whose ``event_id`` is deterministic.

``file.dead_lettered`` (a stage dead-lettered one of the file's messages) marks the file as needing
a person (``files.attention``: stage, error, when); the next event of its progress made after that
failure clears it (the replay worked). ``file.fallback`` / ``file.deferred`` record where an S3
outage left the bytes (PostgreSQL, or the store dead-letter queue); ``file.corrupted`` (seed 004)
marks a stored version whose object is gone, even an ``available`` one. ``file.dead_letter_purged``
(an operator purged one of the file's dead letters) only joins the history: the file's status stays
as it was. ``file.updated`` (an edit of the file's name, kind or metadata) is applied by
:mod:`services.commit.edits`. A new version never disturbs the file's ``available`` version until
it is ``available`` itself (:func:`transition`).
``file.deleted``, and any event of a deleted file: ``services/commit/deletion.py``.
``file.text_extracted`` / ``file.text_failed`` (the text transforms) join the history and write
the version's ``file_texts`` row, the status unchanged: :mod:`services.commit.texts`; so do
``file.video_processed`` / ``file.video_failed`` with ``file_videos``:
:mod:`services.commit.videos`.

After the commit, a terminal event returns that ``file.committed`` (again for a duplicate: the
first attempt may have committed and crashed before publishing; downstream dedupes by
``event_id``) and its spooled bytes are deleted: they are in S3 by now, or unwanted.

What an event claims is checked first (``shared.claims``), and a claim that does not hold is
:class:`~shared.errors.ForgedEvent`, dead-lettered with nothing written:

- an event whose owner is not the file's recorded owner (checked under the file's lock, and
  for a duplicate or a history-only event against the recorded owner) changes nothing of that
  file: not its row, its version, its history or its attention. This holds for the run loop's
  own ``file.dead_lettered`` notices too, so a forged event's notice never marks another
  owner's file; and every ``UPDATE files`` matches ``file_id`` AND ``owner`` as well;
- a ``file.stored`` or ``file.thumbnailed`` must name Sluice's own bucket and the file's own
  key (``shared.naming.object_key``), and its thumbnails the keys next to it;
- only the file's own spool entry, ``spool://<file_id>`` or ``quarantine://<file_id>``, is
  deleted, and only once its owner is checked: a ``file.rejected`` naming another file's entry
  deletes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import structlog

from services.commit import deletion
from services.commit.edits import apply_update
from services.commit.protection import PROTECTION_STATUS, protection_detail, protection_fields
from services.commit.texts import apply_text
from services.commit.videos import apply_video
from shared.claims import check_owner, check_stored_object, own_spool_entry
from shared.errors import InvalidEvent, InvalidSource, StorageUnavailable
from shared.events import (
    BaseEvent,
    FileCommitted,
    FileCorrupted,
    FileDeadLettered,
    FileDeadLetterPurged,
    FileDeferred,
    FileDeleted,
    FileFallback,
    FileReceived,
    FileRejected,
    FileScanned,
    FileStored,
    FileTextExtracted,
    FileTextFailed,
    FileThumbnailed,
    FileUpdated,
    FileVideoFailed,
    FileVideoProcessed,
)
from shared.ports import FileLock, FileStateTransaction, FileStateWriter, Spool, StageFields
from shared.status import FINAL, RANK, REASONED, TERMINAL, FileStatus

log = structlog.get_logger("sluice.commit")

#: Event type → the status it stands for.
EVENT_STATUS: Final[dict[str, FileStatus]] = {
    "file.received": FileStatus.RECEIVED,
    "file.scanned": FileStatus.SCANNED,
    "file.stored": FileStatus.STORED,
    "file.thumbnailed": FileStatus.AVAILABLE,
    "file.rejected": FileStatus.REJECTED,
    "file.fallback": FileStatus.FALLBACK,
    "file.deferred": FileStatus.DEFERRED,
    "file.corrupted": FileStatus.CORRUPTED,
    # A notice moves nothing forward; it creates the file's row if it is the first event seen.
    "file.dead_lettered": FileStatus.RECEIVED,
    **PROTECTION_STATUS,
}


@dataclass(frozen=True)
class Deps:
    """What the handler works through: file state in PostgreSQL, the spool to clean, and
    Sluice's own bucket (``S3_BUCKET_NAME``), the only one a stored file may be in."""

    repository: FileStateWriter
    spool: Spool
    bucket: str


@dataclass(frozen=True)
class Transition:
    """The result of applying one event to a locked file.

    ``file_status is None`` means the ``files`` row stays as it is (the event is about an older
    version, or it changes nothing); ``status_reason`` goes with ``file_status``.
    """

    version_status: FileStatus
    file_status: FileStatus | None
    status_reason: str | None


def advance_status(current: str | None, incoming: str) -> FileStatus:
    """The status after ``incoming`` arrives at a version whose status is ``current``.

    Forward only (``docs/architecture.md`` § Statuses): the higher rank
    (:data:`~shared.status.RANK`) wins, ``deleted`` ends every status, a rescan's
    ``quarantined`` ends ``available`` and ``corrupted``, any other terminal status
    (:data:`~shared.status.TERMINAL`) never moves, ``available`` moves only to ``corrupted``
    (or those two), ``None`` (no row yet) takes ``incoming``. ``current`` is
    the text PostgreSQL holds; the answer is a
    :class:`~shared.status.FileStatus`. E.g.
    ``advance_status("stored", "scanned") == "stored"``,
    ``advance_status("available", "rejected") == "available"``,
    ``advance_status("available", "corrupted") == "corrupted"``.

    Raises:
        ValueError: a status that is not a :class:`~shared.status.FileStatus`.
    """
    old = None if current is None else _parse(current)
    new = _parse(incoming)
    if old is None or new is FileStatus.DELETED:  # a deletion ends every status
        return new
    if new is FileStatus.QUARANTINED and old in (FileStatus.AVAILABLE, FileStatus.CORRUPTED):
        return new  # a rescan's verdict outranks what was served or found lost
    if old in TERMINAL:
        return old
    if old is FileStatus.AVAILABLE:
        return new if new is FileStatus.CORRUPTED else old
    return new if RANK[new] > RANK[old] else old


def _parse(status: str) -> FileStatus:
    try:
        return FileStatus(status)
    except ValueError:
        raise ValueError(f"unknown status {status!r}") from None


def transition(
    lock: FileLock, version_number: int, incoming: FileStatus, detail: str
) -> Transition:
    """Apply a status-``incoming`` event about ``version_number`` to a file locked as ``lock``.

    The version's status advances (:func:`advance_status`). The file's current version is its
    latest ``available`` one; while it has none, its newest (docs/files-api.md § Versions). So
    the file changes only when the version's status changed and:

    - the version is the current one (a first upload moves the file along);
    - it is newer and becomes ``available``, or the file has no ``available`` version;
    - it is older and becomes ``available`` while the current one is not.

    A new version in flight, rejected or failed leaves an ``available`` file as it was. A file
    whose status is in :data:`~shared.status.REASONED` gets ``detail`` as its reason, any
    other status none.
    """
    version_status = advance_status(lock.version_status, incoming)
    if version_status == lock.version_status:
        return Transition(version_status, None, None)
    settled = lock.file_status == FileStatus.AVAILABLE
    becomes_available = version_status is FileStatus.AVAILABLE
    if version_number > lock.current_version:
        follows = becomes_available or not settled
    elif version_number < lock.current_version:
        follows = becomes_available and not settled
    else:
        follows = True
    if not follows:
        return Transition(version_status, None, None)
    reason = detail if version_status in REASONED else None
    return Transition(version_status, version_status, reason)


def status_for(event: BaseEvent) -> FileStatus:
    """The status ``event`` stands for (:data:`EVENT_STATUS`).

    Raises:
        InvalidEvent: an event type the commit stage does not take (``file.committed``).
    """
    try:
        return EVENT_STATUS[event.type]
    except KeyError:
        raise InvalidEvent(
            f"commit does not take {event.type} events", event_id=str(event.event_id)
        ) from None


def detail_for(event: BaseEvent) -> str:
    """A short human reason for the history, e.g. ``infected: Eicar-Test-Signature``,
    ``no thumbnails: image file is truncated``, ``ClamAV 1.0.9 / 27431/Tue Oct  1 2024``."""
    if (protection := protection_detail(event)) is not None:
        return protection
    if isinstance(event, FileScanned):
        return f"{event.scanner} / {event.signature_version}"
    if isinstance(event, FileRejected):
        if event.reason == "infected" and event.signature:
            return f"infected: {event.signature}"
        if event.detail.startswith(f"{event.reason}:"):  # "policy: ...", "abandoned: ..."
            return event.detail
        return f"{event.reason}: {event.detail}"
    if isinstance(event, FileStored):
        return f"stored: s3://{event.bucket}/{event.key}"
    if isinstance(event, FileThumbnailed):
        if event.thumbnail_error:
            return f"no thumbnails: {event.thumbnail_error}"
        if event.thumbnails:
            return "thumbnails: " + ", ".join(f"{t.width}x{t.height}" for t in event.thumbnails)
        return "no thumbnails needed"
    if isinstance(event, FileCommitted):
        return f"committed: {event.status}"
    if isinstance(event, FileFallback):
        return f"kept in PostgreSQL until S3 is back: {event.reason}"
    if isinstance(event, FileDeferred):
        return f"waiting in the store dead-letter queue: {event.reason}"
    if isinstance(event, FileCorrupted):
        return f"object s3://{event.bucket}/{event.key} lost: {event.detail}"
    if isinstance(event, FileReceived):
        return f"received: {event.size_bytes} bytes, {event.content_type}"
    if isinstance(event, FileDeadLettered):
        return (
            f"dead-lettered by the {event.stage} stage after {event.attempts} attempt(s) "
            f"({event.dead_letter_event_type}): {event.error_type}: {event.error_message}"
        )
    if isinstance(event, FileDeadLetterPurged):
        error = ": ".join(t for t in (event.error_type, event.error_message) if t) or "unknown"
        return (
            f"dead letter purged from the {event.stage} stage ({event.dead_letter_event_type}, "
            f"{error}): {event.reason}"
        )
    return event.type


def attention_of(notice: FileDeadLettered) -> dict[str, Any]:
    """What ``files.attention`` holds for a file whose message ``notice`` reports
    dead-lettered: where (``stage``, ``event_type``), why (``error_type``, ``error_message``),
    ``attempts``, ``failed_at`` (ISO 8601) and the dead letter's ``event_id``."""
    return {
        "stage": notice.stage,
        "event_type": notice.dead_letter_event_type,
        "event_id": str(notice.dead_letter_event_id),
        "error_type": notice.error_type,
        "error_message": notice.error_message,
        "attempts": notice.attempts,
        "failed_at": notice.failed_at.isoformat(),
    }


def stage_fields(event: BaseEvent) -> StageFields:
    """The ``file_versions`` columns ``event`` sets (scanner, bucket/key, thumbnails, ...)."""
    if (protection := protection_fields(event)) is not None:
        return protection
    if isinstance(event, FileScanned):
        return StageFields(scanner=event.scanner, signature_version=event.signature_version)
    if isinstance(event, FileRejected):
        return StageFields(rejection_reason=event.reason, signature=event.signature)
    if isinstance(event, FileStored):
        return StageFields(bucket=event.bucket, object_key=event.key)
    if isinstance(event, FileThumbnailed):
        return StageFields(
            bucket=event.bucket,
            object_key=event.key,
            thumbnails=[t.model_dump(mode="json") for t in event.thumbnails],
            thumbnail_error=event.thumbnail_error,
        )
    return StageFields()


async def handle(event: BaseEvent, deps: Deps) -> list[BaseEvent]:
    """Commit ``event`` to PostgreSQL; return ``[file.committed]`` for a terminal event.

    A ``file.dead_letter_purged`` is only added to the file's history.

    Raises:
        InvalidEvent: ``event`` is not one the commit stage takes (dead-lettered).
        ForgedEvent: the event's owner is not the file's, or it names a bucket or key that is
            not the file's own (dead-lettered; nothing is written).
        DatabaseUnavailable: PostgreSQL refused or lost the connection (retried).
    """
    if isinstance(event, FileDeleted):
        return await deletion.handle_deleted(event, deps.repository)
    if isinstance(event, FileDeadLetterPurged):
        await _record_only(event, deps)
        return []
    if isinstance(event, FileUpdated):
        await apply_update(event, deps.repository)
        return []
    if isinstance(event, FileTextExtracted | FileTextFailed):
        await apply_text(event, deps.repository, deps.bucket)
        return []
    if isinstance(event, FileVideoProcessed | FileVideoFailed):
        await apply_video(event, deps.repository, deps.bucket)
        return []
    incoming = status_for(event)
    if isinstance(event, FileStored | FileThumbnailed):
        check_stored_object(event, deps.bucket)
    detail = detail_for(event)
    committed: FileCommitted | None = None
    async with deps.repository.transaction(file_id=event.file_id, event_id=event.event_id) as tx:
        if await tx.deleted(event):
            return deletion.dropped(event)
        if await tx.record_event(event, detail):
            lock = await tx.lock_file(event, initial_status=incoming)
            check_owner(event, lock.owner)  # raising rolls back the history row too
            change = transition(lock, event.version_number, incoming, detail)
            await tx.upsert_version(event, change.version_status, stage_fields(event))
            if change.file_status is not None:
                await tx.update_file(event, change.file_status, change.status_reason)
            if isinstance(event, FileDeadLettered):
                await tx.set_attention(event, attention_of(event))
            elif lock.has_attention and await tx.clear_attention(event):
                log.info("attention cleared: the file moves again")
            if incoming in FINAL:
                # advance_status keeps a terminal incoming status or an earlier final one.
                committed = event.follow(FileCommitted, status=change.version_status)
                await tx.record_event(committed, detail_for(committed))
        else:
            check_owner(event, await tx.owner_of(event.file_id))
            log.info("duplicate event; state unchanged")
            if incoming in FINAL:
                committed = await _recorded_commit(tx, event, incoming)
    if committed is None:
        return []
    await _clean_spool(event, deps.spool)
    return [committed]


async def _record_only(event: BaseEvent, deps: Deps) -> None:
    """Add ``event`` to the file's history without touching ``files`` or ``file_versions``."""
    async with deps.repository.transaction(file_id=event.file_id, event_id=event.event_id) as tx:
        if await tx.deleted(event):
            return
        check_owner(event, await tx.owner_of(event.file_id))
        if not await tx.record_event(event, detail_for(event)):
            log.info("duplicate event; history unchanged")


async def _recorded_commit(
    tx: FileStateTransaction, event: BaseEvent, status: FileStatus
) -> FileCommitted:
    """The ``file.committed`` recorded with ``event`` the first time, field for field."""
    fresh = event.follow(FileCommitted, status=status)
    payload = await tx.event_payload(fresh.event_id)
    if payload is not None:
        return FileCommitted.model_validate(payload)
    # Only if the history lost the row: record it now so the history stays complete.
    await tx.record_event(fresh, detail_for(fresh))
    return fresh


async def _clean_spool(event: BaseEvent, spool: Spool) -> None:
    """Delete the file's own spool entry, ``spool://<file_id>`` or ``quarantine://<file_id>``
    (idempotent); other sources are not ours to delete, nor is another file's spool entry.

    A failure is logged, not raised: the file is committed, and a leftover spool file (or
    quarantine object, S3 being down) costs space only until ``sluice spool clean``.
    """
    if not spool.owns(event.source):
        return
    if not own_spool_entry(event):
        log.warning("spool source is not the file's own entry; left alone", source=event.source)
        return
    try:
        removed = await spool.delete(event.source)
    except (OSError, InvalidSource, StorageUnavailable) as exc:
        log.warning("spool cleanup failed", source=event.source, error=repr(exc))
        return
    if removed:
        log.debug("spool file deleted", source=event.source)
