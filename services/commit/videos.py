"""The commit stage's side of the video transform: ``file.video_processed`` and
``file.video_failed`` (docs/transforms.md).

In one transaction, as for the text transforms (:mod:`services.commit.texts`): the event joins
the file's history (``event_id`` is the idempotency key); its owner, bucket and keys are checked
against the file's own (``shared.claims``: a forged event writes nothing); the version's
``file_videos`` row (migration 0013) is written: the master playlist's key, the renditions, the
poster's thumbnails, or the failure's reason. Of two events of one version, the one made later
(``occurred_at``) stays.

The file's status never moves: a video is ``available`` once stored, whatever its transform
says. An event of a deleted file is dropped (``services.commit.deletion``).
"""

from __future__ import annotations

import structlog

from shared.claims import check_owner, check_stored_object
from shared.events import FileVideoFailed, FileVideoProcessed
from shared.ports import FileStateWriter
from shared.status import FileStatus

log = structlog.get_logger("sluice.commit")


def detail_of(event: FileVideoProcessed | FileVideoFailed) -> str:
    """The history's line, e.g. ``video: 10.0 s, HLS 360p+720p, poster`` or ``no video: not a
    decodable video: moov atom not found``."""
    if isinstance(event, FileVideoFailed):
        return f"no video: {event.reason}"
    names = "+".join(r.name for r in event.renditions)
    poster = ", poster" if event.poster else ""
    return f"video: {event.duration_s:.1f} s, HLS {names}{poster}"


async def apply_video(
    event: FileVideoProcessed | FileVideoFailed, repository: FileStateWriter, bucket: str
) -> None:
    """Record ``event`` and the version's video artefacts (module docstring).

    Raises:
        ForgedEvent: the file is another owner's, or the event names a bucket or key that is
            not the file's own (dead-lettered; nothing is written).
        DatabaseUnavailable: PostgreSQL refused or lost the connection (retried).
    """
    check_stored_object(event, bucket)
    async with repository.transaction(file_id=event.file_id, event_id=event.event_id) as tx:
        if await tx.deleted(event):
            log.info("video of a deleted file dropped")
            return
        if not await tx.record_event(event, detail_of(event)):
            check_owner(event, await tx.owner_of(event.file_id))
            log.info("duplicate event; state unchanged")
            return
        lock = await tx.lock_file(event, initial_status=FileStatus.RECEIVED)
        check_owner(event, lock.owner)  # raising rolls back the history row too
        await tx.record_video(event)
        if await tx.clear_attention(event):
            log.info("attention cleared: the file moves again")
