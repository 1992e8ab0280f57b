"""The video stage: ``file.stored`` of a video → a poster frame's thumbnails and an HLS
rendition beside the original → ``file.video_processed`` (seed 002: HLS streaming;
docs/transforms.md).

MP4, QuickTime and WebM files (``shared.transforms.VIDEO_TYPES``) are probed by ffprobe, their
frame at 1 s (or mid-way through a shorter video) made into thumbnails of the image thumbnails'
sizes and formats (``shared.imaging.render``), and transcoded by ffmpeg into H.264 (+ AAC)
renditions of the ladder ``shared.hls.ladder`` (360p and 720p by default, never upscaled) in
6 s MPEG-TS segments, with a master playlist; every run in a temporary directory, bounded by
``SLUICE_VIDEO_TIMEOUT_S`` and killed past it (``shared.adapters.ffmpeg``). Other files pass
through with no event (not applicable). A file that is not a decodable video (corrupt,
truncated, no video stream, longer than ``SLUICE_VIDEO_MAX_DURATION_S``, ffmpeg past its time)
gets ``file.video_failed`` with the reason, never a dead letter: the file stays ``available``.

As every stage reading an original, it first checks the event's claim (``shared.claims``) and
the bytes' SHA-256. Keys are deterministic (``shared.naming.hls_key``, ``poster_key``) and so
is the event id (UUIDv5 of the ``file.stored`` id and ``file.video_processed:video``): a
redelivered ``file.stored`` overwrites the same objects and makes the same event, which the
commit stage records once. The master playlist is written last, so where it is, its renditions
are too.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import structlog

from shared.adapters import ffmpeg
from shared.claims import check_stored_object
from shared.errors import InvalidEvent, ThumbnailError, VideoError
from shared.events import (
    BaseEvent,
    FileStored,
    FileVideoFailed,
    FileVideoProcessed,
    HlsRendition,
    Thumbnail,
)
from shared.hls import PLAYLIST_TYPE, SEGMENT_TYPE, Rung, ladder, segment_durations
from shared.imaging.render import render_thumbnails
from shared.naming import HLS_MASTER, hls_key, poster_key
from shared.originals import download_original
from shared.ports import ObjectStore
from shared.settings import ThumbnailSettings
from shared.transform_settings import VideoSettings
from shared.transforms import VIDEO_TYPES

log = structlog.get_logger("sluice.video")
#: When the poster frame is taken, seconds (or mid-way through a shorter video).
POSTER_AT_S = 1.0


@dataclass(frozen=True)
class Deps:
    """What the video stage works through."""

    storage: ObjectStore
    settings: VideoSettings
    #: Sizes, formats and decoder limit of the poster's thumbnails (``SLUICE_THUMBNAIL_*``).
    thumbnails: ThumbnailSettings
    #: At most ``settings.max_concurrent`` videos transcoded at once.
    slots: asyncio.Semaphore


def event_id_of(event: FileStored, type_: str) -> uuid.UUID:
    """The deterministic id of the video stage's ``type_`` answer to ``event`` (as
    ``shared.transforms.event_id_of``)."""
    return uuid.uuid5(event.event_id, f"{type_}:video")


def video_failed(event: FileStored, reason: str) -> FileVideoFailed:
    """The ``file.video_failed`` of ``event``'s original, with ``reason``."""
    return event.follow(
        FileVideoFailed,
        event_id=event_id_of(event, FileVideoFailed.routing_key),
        bucket=event.bucket,
        key=event.key,
        reason=reason,
    )


async def handle(event: BaseEvent, deps: Deps) -> list[BaseEvent]:
    """Make the poster and HLS rendition of a stored video; return its ``file.video_processed``
    or ``file.video_failed`` (nothing for a file that is not a video).

    Raises:
        InvalidEvent: not a ``file.stored`` event.
        ForgedEvent: another bucket, or a key not the file's own (``shared.claims``).
        ChecksumMismatch: the object read back does not hash to the event's SHA-256.
        SourceMissing: the original is not in the bucket.
        StorageUnavailable: S3 down (retried).
        ConfigError: ffmpeg is not installed.
    """
    if not isinstance(event, FileStored):
        raise InvalidEvent(f"video stage does not take {event.type}")
    check_stored_object(event, deps.storage.bucket)
    if event.content_type not in VIDEO_TYPES:
        return []
    async with deps.slots:
        with tempfile.TemporaryDirectory(prefix="sluice-video-") as tmp:
            work = Path(tmp)
            source = work / "source"
            # Streamed to disk, for ffmpeg to read: one chunk in memory, not the whole video.
            await download_original(deps.storage, event, source)
            try:
                return [await _process(event, deps, source, work / "hls")]
            except VideoError as exc:
                log.info("video.failed", reason=str(exc))
                return [video_failed(event, str(exc))]


async def _process(
    event: FileStored, deps: Deps, source: Path, out_dir: Path
) -> FileVideoProcessed:
    """Probe, poster, transcode and store; the ``file.video_processed`` that says so.

    Raises:
        VideoError: the file is not a decodable video (or too long, or ffmpeg timed out).
        StorageUnavailable: S3 down (retried).
    """
    settings = deps.settings
    probe = await ffmpeg.probe(source, timeout_s=settings.timeout_s)
    if probe.duration_s > settings.max_duration_s:
        raise VideoError(
            f"video too long: {probe.duration_s:.0f} s > limit {settings.max_duration_s:g} s "
            "(SLUICE_VIDEO_MAX_DURATION_S)"
        )
    rungs = ladder(probe.width, probe.height, settings.rendition_heights_px)
    png = await ffmpeg.frame_png(
        source,
        min(POSTER_AT_S, probe.duration_s / 2),
        timeout_s=settings.timeout_s,
        threads=settings.threads,
    )
    poster = await _store_poster(event, deps, png)
    await ffmpeg.make_hls(
        source,
        out_dir,
        rungs,
        has_audio=probe.has_audio,
        segment_s=settings.segment_s,
        timeout_s=settings.timeout_s,
        threads=settings.threads,
    )
    renditions = await _store_hls(event, deps, out_dir, rungs)
    return event.follow(
        FileVideoProcessed,
        event_id=event_id_of(event, FileVideoProcessed.routing_key),
        bucket=event.bucket,
        key=event.key,
        duration_s=round(probe.duration_s, 3),
        width=probe.width,
        height=probe.height,
        video_codec=probe.video_codec,
        has_audio=probe.has_audio,
        master_key=hls_key(event.key, HLS_MASTER),
        segment_s=settings.segment_s,
        renditions=renditions,
        poster=poster,
    )


async def _store_poster(event: FileStored, deps: Deps, png: bytes) -> tuple[Thumbnail, ...]:
    """The poster frame's thumbnails, stored at ``poster_key`` (the image thumbnails' sizes and
    formats, rendered by the same Pillow code)."""
    t = deps.thumbnails
    render = functools.partial(
        render_thumbnails,
        png,
        "image/png",
        sizes_px=t.sizes_px,
        max_pixels=t.max_pixels,
        webp_quality=t.webp_quality,
        jpeg_quality=t.jpeg_quality,
        jpeg_min_size_px=t.jpeg_min_size_px,
    )
    try:
        rendered = await asyncio.to_thread(render)
    except ThumbnailError as exc:
        raise VideoError(f"no poster frame: {exc}") from None
    poster = []
    for thumb in rendered:
        key = poster_key(event.key, thumb.size_px, thumb.content_type)
        await deps.storage.put_bytes(
            key,
            thumb.data,
            sha256_hex=hashlib.sha256(thumb.data).hexdigest(),
            content_type=thumb.content_type,
            metadata={"source-sha256": event.sha256},
        )
        poster.append(
            Thumbnail(
                size_px=thumb.size_px,
                key=key,
                width=thumb.width,
                height=thumb.height,
                size_bytes=len(thumb.data),
                content_type=thumb.content_type,
            )
        )
    return tuple(poster)


async def _store_hls(
    event: FileStored, deps: Deps, out_dir: Path, rungs: list[Rung]
) -> tuple[HlsRendition, ...]:
    """Put every file ffmpeg wrote in ``out_dir`` under ``hls_key``: segments, then media
    playlists, then the master (a reader that finds the master finds the rest). One file is
    read at a time, so a long video's segments never sit in memory together."""
    names = await asyncio.to_thread(_file_names, out_dir)
    playlist_bytes = {
        name: await asyncio.to_thread((out_dir / name).read_bytes)
        for name in names
        if name.endswith(".m3u8")
    }
    playlists = {name: body.decode("utf-8", "replace") for name, body in playlist_bytes.items()}
    for rung in rungs:
        if f"{rung.name}.m3u8" not in playlists:
            raise VideoError(f"not a decodable video: ffmpeg wrote no {rung.name} playlist")
    order = sorted(names, key=lambda n: (n == HLS_MASTER, n.endswith(".m3u8"), n))
    for name in order:  # the playlists, read above, are not read again
        if name in playlist_bytes:
            body = playlist_bytes[name]
        else:
            body = await asyncio.to_thread((out_dir / name).read_bytes)
        await deps.storage.put_bytes(
            hls_key(event.key, name),
            body,
            sha256_hex=hashlib.sha256(body).hexdigest(),
            content_type=PLAYLIST_TYPE if name.endswith(".m3u8") else SEGMENT_TYPE,
            metadata={"source-sha256": event.sha256},
        )
    master = playlists.get(HLS_MASTER, "")
    return tuple(
        HlsRendition(
            name=rung.name,
            playlist_key=hls_key(event.key, f"{rung.name}.m3u8"),
            width=rung.width,
            height=rung.height,
            bandwidth=_bandwidth(master, f"{rung.name}.m3u8", rung),
            segments=max(1, len(segment_durations(playlists[f"{rung.name}.m3u8"]))),
        )
        for rung in rungs
    )


def _file_names(directory: Path) -> list[str]:
    """The names of the files in ``directory`` (what ffmpeg wrote), sorted; blocking."""
    return sorted(p.name for p in directory.iterdir() if p.is_file())


def _bandwidth(master: str, name: str, rung: Rung) -> int:
    """The ``BANDWIDTH`` the master announces for the media playlist ``name`` (bits/s), else
    the rung's peak video rate."""
    lines = master.splitlines()
    for index, line in enumerate(lines[1:], start=1):
        if line.strip() == name and lines[index - 1].startswith("#EXT-X-STREAM-INF:"):
            for attribute in lines[index - 1].split(":", 1)[1].split(","):
                if attribute.startswith("BANDWIDTH="):
                    return int(attribute.split("=", 1)[1])
    return rung.maxrate_kbps * 1000
