"""The thumbnail stage: ``file.stored`` → thumbnails by the original → ``file.thumbnailed``.

Images (JPEG, PNG, GIF, WebP, HEIC/HEIF) get one thumbnail per configured long side (256 and
1024 px by default): a WebP, or a JPEG from ``jpeg_min_size_px`` up when the image is opaque
(``shared.imaging.render``); everything else passes through with no thumbnails. An image
that cannot be thumbnailed (truncated, corrupt, a decompression bomb) is not an error of the
pipeline: the file is still stored and committed, and ``thumbnail_error`` says why it has no
thumbnails.

Before it reads anything, the stage checks what the event claims (``shared.claims``): the
original is in Sluice's own bucket at the file's own key, ``shared.naming.object_key(owner,
file_id, received_at, original_name)``. Any other bucket or key (an event of owner ``mallory``
naming ``alice/...``) is :class:`~shared.errors.ForgedEvent`, dead-lettered at once: the stage
never reads an object the event's owner does not own, nor writes thumbnails next to it.

Decoding runs in a render process (``shared.imaging.pool``: every core, a decoder crash
contained), or in a worker thread when no pool is given, so the event loop keeps serving other
messages. Thumbnail keys
are deterministic (``shared.naming.thumbnail_key``), so a redelivered event overwrites the same
objects instead of adding new ones.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from shared.claims import check_stored_object
from shared.errors import InvalidEvent, ThumbnailError
from shared.events import BaseEvent, FileStored, FileThumbnailed, Thumbnail
from shared.imaging.pool import RenderPool
from shared.imaging.render import JPEG, WEBP, is_thumbnailable, render_thumbnails
from shared.naming import thumbnail_key
from shared.originals import read_original
from shared.ports import ObjectStore
from shared.settings import ThumbnailSettings


@dataclass(frozen=True)
class Deps:
    """What the thumbnail stage works through."""

    storage: ObjectStore
    settings: ThumbnailSettings
    #: At most ``settings.max_concurrent_renders`` decodes at once, whatever the prefetch.
    renders: asyncio.Semaphore
    #: The render processes; ``None``: render in a thread of this process.
    pool: RenderPool | None = None


async def handle(event: BaseEvent, deps: Deps) -> list[BaseEvent]:
    """Make and store the thumbnails of a stored file; return its ``file.thumbnailed``.

    Raises:
        InvalidEvent: not a ``file.stored`` event.
        ForgedEvent: the event names a bucket other than Sluice's, or a key other than the
            file's own (``shared.claims.check_stored_object``).
        ChecksumMismatch: the object read back does not hash to the event's SHA-256.
        SourceMissing: the original is not in the bucket.
        StorageUnavailable: S3 down (retried).
    """
    if not isinstance(event, FileStored):
        raise InvalidEvent(f"thumbnail stage does not take {event.type}")
    check_stored_object(event, deps.storage.bucket)
    if not is_thumbnailable(event.content_type):
        return [event.follow(FileThumbnailed, bucket=event.bucket, key=event.key)]
    done = await _already_stored(event, deps)
    if done is not None:  # a redelivery: the thumbnails of this very original are there
        return [event.follow(FileThumbnailed, bucket=event.bucket, key=event.key, thumbnails=done)]

    data = await read_original(deps.storage, event)
    try:
        options: dict[str, Any] = {
            "sizes_px": deps.settings.sizes_px,
            "max_pixels": deps.settings.max_pixels,
            "webp_quality": deps.settings.webp_quality,
            "jpeg_quality": deps.settings.jpeg_quality,
            "jpeg_min_size_px": deps.settings.jpeg_min_size_px,
        }
        async with deps.renders:
            if deps.pool is not None:
                rendered = await deps.pool.render(data, event.content_type, **options)
            else:
                rendered = await asyncio.to_thread(
                    functools.partial(render_thumbnails, data, event.content_type, **options)
                )
    except ThumbnailError as exc:
        return [
            event.follow(
                FileThumbnailed, bucket=event.bucket, key=event.key, thumbnail_error=str(exc)
            )
        ]

    thumbnails = []
    for thumb in rendered:
        key = thumbnail_key(event.key, thumb.size_px, thumb.content_type)
        await deps.storage.put_bytes(
            key,
            thumb.data,
            sha256_hex=hashlib.sha256(thumb.data).hexdigest(),
            content_type=thumb.content_type,
            metadata={
                "source-sha256": event.sha256,
                "width": str(thumb.width),
                "height": str(thumb.height),
            },
        )
        thumbnails.append(
            Thumbnail(
                size_px=thumb.size_px,
                key=key,
                width=thumb.width,
                height=thumb.height,
                size_bytes=len(thumb.data),
                content_type=thumb.content_type,
            )
        )
    return [
        event.follow(
            FileThumbnailed, bucket=event.bucket, key=event.key, thumbnails=tuple(thumbnails)
        )
    ]


async def _already_stored(event: FileStored, deps: Deps) -> tuple[Thumbnail, ...] | None:
    """The thumbnails a previous delivery stored for this original, or ``None`` if any is missing.

    Each thumbnail carries the SHA-256 of its original and its size in its object metadata, so a
    redelivered ``file.stored`` answers without decoding the image again. A size from
    ``jpeg_min_size_px`` up is a JPEG, or a WebP when the image has transparency: the JPEG key
    is looked up first.
    """
    found = []
    for size_px in deps.settings.sizes_px:
        types = (JPEG, WEBP) if size_px >= deps.settings.jpeg_min_size_px else (WEBP,)
        for content_type in types:
            key = thumbnail_key(event.key, size_px, content_type)
            info = await deps.storage.head(key, bucket=event.bucket)
            if info is not None and info.metadata.get("source-sha256") == event.sha256:
                break
        else:
            return None
        try:
            width, height = int(info.metadata["width"]), int(info.metadata["height"])
        except (KeyError, ValueError):
            return None
        found.append(
            Thumbnail(
                size_px=size_px,
                key=key,
                width=width,
                height=height,
                size_bytes=info.size_bytes,
                content_type=content_type,
            )
        )
    return tuple(found)
