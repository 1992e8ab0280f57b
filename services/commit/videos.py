"""The commit stage's side of the video transform: ``file.video_processed`` and
``file.video_failed`` (docs/transforms.md).

In one transaction, as for every transform (:mod:`services.commit.artefacts`): the event joins
the file's history (``event_id`` is the idempotency key); its owner, bucket and keys are checked
against the file's own (``shared.claims``: a forged event writes nothing); the version's
``file_videos`` row (migration 0013) is written: the master playlist's key, the renditions, the
poster's thumbnails, or the failure's reason. Of two events of one version, the one made later
(``occurred_at``) stays.

The file's status never moves: a video is ``available`` once stored, whatever its transform
says. An event of a deleted file is dropped (``services.commit.deletion``).
"""

from __future__ import annotations

from services.commit.artefacts import apply_artefact
from shared.events import FileVideoFailed, FileVideoProcessed
from shared.ports import FileStateWriter


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
    await apply_artefact(
        event, repository, bucket, detail_of(event), lambda tx: tx.record_video(event)
    )
