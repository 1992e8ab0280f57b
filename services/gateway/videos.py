"""A video's HLS rendition and poster: ``GET /v1/files/{file_id}/hls/{name}`` and their
``artefacts`` in ``GET /v1/files/{file_id}`` (docs/transforms.md; seed 002: HLS streaming).

The gateway only reads ``file_videos`` (the commit stage writes it) and the playlists beside the
original. The owner is checked like on every file route: another owner's file is 404
``not_found``, a deleted one too, a quarantined one 410 ``quarantined``. The playlists are served
rewritten (``shared.hls.rewrite_playlist``): the master's media playlists point at this route,
a media playlist's segments at presigned URLs (S3's, or the gateway's signed
``/v1/objects/...`` with ``SLUICE_STORAGE_BACKEND=local``) valid for
``SLUICE_S3_PRESIGN_TTL_S``. So a player sends the API key to the gateway only; the segments
need none.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Path
from starlette.responses import Response

from services.gateway.auth import Owner
from services.gateway.deps import GatewayDeps, get_deps
from services.gateway.errors import ApiError
from services.gateway.repo import fetch_file, fetch_video
from services.gateway.schemas import ErrorBody, HlsArtefact, PosterArtefact, RenditionOut
from shared.errors import SourceMissing
from shared.hls import PLAYLIST_TYPE, listed_names, rewrite_playlist
from shared.naming import HLS_MASTER
from shared.ports import ObjectStore
from shared.status import FileStatus
from shared.transforms import VIDEO_TYPES

log = structlog.get_logger("sluice.gateway")
router = APIRouter()
Deps = Annotated[GatewayDeps, Depends(get_deps)]
#: Statuses whose file the video stage will never read (never stored, or no longer).
_NEVER = (FileStatus.REJECTED, FileStatus.QUARANTINED, FileStatus.CORRUPTED)


def hls_url(file_id: uuid.UUID, name: str = HLS_MASTER) -> str:
    """The gateway path of a playlist of the file's rendition, e.g.
    ``/v1/files/3f…/hls/master.m3u8``."""
    return f"/v1/files/{file_id}/hls/{name}"


async def video_artefacts(
    file_id: uuid.UUID, video: Any, storage: ObjectStore, ttl_s: int, stored: bool
) -> list[HlsArtefact | PosterArtefact]:
    """The ``artefacts`` of a file whose ``file_videos`` row is ``video`` (or ``None``): the
    master playlist, then each poster thumbnail (a presigned URL when ``stored``)."""
    if video is None or video["state"] != "processed":
        return []
    artefacts: list[HlsArtefact | PosterArtefact] = [
        HlsArtefact(
            content_type=PLAYLIST_TYPE,
            duration_s=video["duration_s"],
            width=video["width"],
            height=video["height"],
            has_audio=video["has_audio"],
            segment_s=video["segment_s"],
            renditions=[
                RenditionOut(
                    name=r["name"],
                    width=r["width"],
                    height=r["height"],
                    bandwidth=r["bandwidth"],
                    url=hls_url(file_id, f"{r['name']}.m3u8"),
                )
                for r in video["renditions"] or []
            ],
            url=hls_url(file_id),
        )
    ]
    for thumb in video["poster"] or []:
        artefacts.append(
            PosterArtefact(
                size_px=thumb["size_px"],
                width=thumb["width"],
                height=thumb["height"],
                size_bytes=thumb["size_bytes"],
                content_type=thumb["content_type"],
                url=await storage.presigned_get_url(thumb["key"], ttl_s) if stored else None,
            )
        )
    return artefacts


def video_error_of(video: Any) -> str | None:
    """Why the video stage could not read the version (``file_videos.error``), or ``None``."""
    return None if video is None or video["state"] != "failed" else str(video["error"])


@router.get(
    "/v1/files/{file_id}/hls/{name}",
    responses={
        200: {
            "content": {PLAYLIST_TYPE: {}},
            "description": "The playlist, its URIs made fetchable (RFC 8216).",
        },
        401: {"model": ErrorBody, "description": "Missing, unknown or revoked API key."},
        404: {
            "model": ErrorBody,
            "description": "No such file for this owner, or no such playlist (`not_found`); "
            "no rendition: `hls_pending`, `hls_failed` (with the reason), "
            "`hls_not_applicable`, `hls_missing`.",
        },
        410: {"model": ErrorBody, "description": "Quarantined: a rescan found it infected."},
        503: {"model": ErrorBody, "description": "Object storage unreachable."},
    },
    response_model=None,
    summary="A playlist of a video's HLS rendition",
)
async def get_playlist(
    file_id: uuid.UUID,
    name: Annotated[
        str,
        Path(
            pattern=r"^[0-9a-z]{1,16}\.m3u8$",
            description="`master.m3u8`, or a rendition's media playlist, e.g. `720p.m3u8`.",
        ),
    ],
    owner: Owner,
    deps: Deps,
) -> Response:
    """The master playlist of the file's current version (its media playlists pointing at this
    route), or a media playlist (its segments as presigned URLs valid for
    ``SLUICE_S3_PRESIGN_TTL_S``)."""
    structlog.contextvars.bind_contextvars(file_id=str(file_id))
    row = await fetch_file(deps.pool, file_id, owner)
    if row is None:
        raise ApiError(404, "not_found", "unknown file (or not yet recorded)")
    if row["status"] == FileStatus.QUARANTINED:  # a rescan found it infected: nothing served
        raise ApiError(410, "quarantined", f"the file is quarantined: {row['status_reason']}")
    video = await fetch_video(deps.pool, file_id, row["current_version"], owner)
    if video is None:
        if row["content_type"] not in VIDEO_TYPES:
            raise ApiError(
                404, "hls_not_applicable", f"no HLS rendition of {row['content_type']} (videos)"
            )
        if not deps.settings.video.enabled or row["status"] in _NEVER:
            why = "not enabled" if row["status"] not in _NEVER else f"file {row['status']}"
            raise ApiError(404, "hls_not_applicable", f"no HLS rendition applies ({why})")
        raise ApiError(404, "hls_pending", "the video's HLS rendition is pending")
    if video["state"] == "failed":
        raise ApiError(404, "hls_failed", f"video processing failed: {video['error']}")
    if row["status"] in _NEVER:
        raise ApiError(404, "hls_not_applicable", f"file {row['status']}")
    master_key: str = video["master_key"]
    prefix = master_key.removesuffix(HLS_MASTER)
    renditions = {f"{r['name']}.m3u8" for r in video["renditions"] or []}
    if name != HLS_MASTER and name not in renditions:
        raise ApiError(404, "not_found", f"no playlist {name} (renditions: {sorted(renditions)})")
    key = prefix + name
    try:
        body = (await deps.storage.get_bytes(key)).decode("utf-8", "replace")
    except SourceMissing:
        log.warning("gateway.hls_missing", key=key)
        raise ApiError(404, "hls_missing", "the playlist object is missing") from None
    if name == HLS_MASTER:
        urls = {n: hls_url(file_id, n) for n in listed_names(body)}
    else:
        ttl_s = deps.settings.s3.presign_ttl_s
        urls = {
            n: await deps.storage.presigned_get_url(prefix + n, ttl_s) for n in listed_names(body)
        }
    try:
        served = rewrite_playlist(body, lambda n: urls[n])
    except ValueError as exc:
        log.warning("gateway.hls_foreign_uri", key=key, error=str(exc))
        raise ApiError(404, "hls_missing", "the playlist object is damaged") from None
    return Response(
        served,
        media_type=PLAYLIST_TYPE,
        headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
    )
