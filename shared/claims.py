"""What a stage checks of an event before it acts on it.

An event is a claim: whoever published it says which file it is about, whose file that is, and
where its bytes are. The stages act on a claim only where it holds, so that an event cannot make
Sluice touch another owner's file (``docs/events.md`` § What each stage checks):

- an object the event names (``file.stored``, ``file.thumbnailed``) is in Sluice's own bucket,
  at the key the store stage gives the file, ``shared.naming.object_key(owner, file_id,
  received_at, original_name)``, and each thumbnail next to it
  (``shared.naming.thumbnail_key``); so an event of owner ``mallory`` cannot name
  ``alice/...``, and mallory is never handed a presigned URL to alice's object
  (:func:`check_stored_object`);
- an event about a file already recorded carries the file's recorded owner
  (:func:`check_owner`);
- a spooled source is the file's own spool entry only when it is ``spool://<file_id>`` or
  ``quarantine://<file_id>``, the name the gateway spools every upload under
  (:func:`own_spool_entry`); nothing removes another file's bytes from the spool.

A check that fails raises :class:`~shared.errors.ForgedEvent` (permanent: the message is
dead-lettered at once), whose message names the claim and what holds.
"""

from __future__ import annotations

from shared.adapters.quarantine import SCHEME as QUARANTINE_SCHEME
from shared.adapters.spool import SCHEME as SPOOL_SCHEME
from shared.errors import ForgedEvent
from shared.events import (
    BaseEvent,
    FileStored,
    FileTextExtracted,
    FileTextFailed,
    FileThumbnailed,
    FileVideoFailed,
    FileVideoProcessed,
)
from shared.naming import (
    HLS_MASTER,
    hls_key,
    object_key,
    poster_key,
    spool_name,
    text_key,
    thumbnail_key,
)


def check_stored_object(
    event: FileStored
    | FileThumbnailed
    | FileTextExtracted
    | FileTextFailed
    | FileVideoProcessed
    | FileVideoFailed,
    own_bucket: str,
) -> None:
    """Check that ``event`` names Sluice's bucket ``own_bucket``, the file's own object key and,
    for ``file.thumbnailed``, thumbnails next to it; for ``file.text_extracted``, the text at
    ``shared.naming.text_key`` of that key; for ``file.video_processed``, the HLS playlists and
    poster thumbnails at ``shared.naming.hls_key`` and ``poster_key`` of that key.

    Raises:
        ForgedEvent: another bucket, another key (e.g. ``alice/...`` in an event of owner
            ``mallory``), or a thumbnail key that is not the original's.
    """
    context = _context(event)
    if event.bucket != own_bucket:
        raise ForgedEvent(
            f"{event.type} names bucket {event.bucket!r}, not Sluice's bucket {own_bucket!r}",
            **context,
        )
    expected = object_key(
        event.owner, event.file_id, event.received_at, event.original_name, event.version_number
    )
    if event.key != expected:
        raise ForgedEvent(
            f"{event.type} of owner {event.owner!r} names key {event.key!r}, not the file's "
            f"key {expected!r}",
            **context,
        )
    if isinstance(event, FileThumbnailed):
        for thumb in event.thumbnails:
            own = thumbnail_key(expected, thumb.size_px, thumb.content_type)
            if thumb.key != own:
                raise ForgedEvent(
                    f"file.thumbnailed names thumbnail key {thumb.key!r}, not {own!r}",
                    **context,
                )
    if isinstance(event, FileTextExtracted) and event.text_key != text_key(expected):
        raise ForgedEvent(
            f"file.text_extracted names text key {event.text_key!r}, not {text_key(expected)!r}",
            **context,
        )
    if isinstance(event, FileVideoProcessed):
        owns = [(event.master_key, hls_key(expected, HLS_MASTER))]
        owns += [(r.playlist_key, hls_key(expected, f"{r.name}.m3u8")) for r in event.renditions]
        owns += [(p.key, poster_key(expected, p.size_px, p.content_type)) for p in event.poster]
        for named, own in owns:
            if named != own:
                raise ForgedEvent(
                    f"file.video_processed names key {named!r}, not {own!r}", **context
                )


def check_owner(event: BaseEvent, recorded_owner: str | None) -> None:
    """Check that ``event`` is about a file of its own owner: ``recorded_owner`` is the file's
    recorded owner, ``None`` if the file is not recorded yet (any owner may then claim it).

    Raises:
        ForgedEvent: the owners differ; the message names both.
    """
    if recorded_owner is not None and recorded_owner != event.owner:
        raise ForgedEvent(
            f"{event.type} of owner {event.owner!r} is about a file of owner {recorded_owner!r}",
            **_context(event),
        )


def own_spool_entry(event: BaseEvent) -> bool:
    """Whether ``event.source`` is the spool entry of ``event``'s own file version,
    ``spool://<name>`` or ``quarantine://<name>`` with ``name`` its
    :func:`~shared.naming.spool_name` (the gateway spools an upload under its file id, and a
    later version under ``<file_id>.v<n>``)."""
    name = spool_name(event.file_id, event.version_number)
    return event.source in (f"{SPOOL_SCHEME}{name}", f"{QUARANTINE_SCHEME}{name}")


def _context(event: BaseEvent) -> dict[str, str]:
    return {"file_id": str(event.file_id), "event_id": str(event.event_id)}
