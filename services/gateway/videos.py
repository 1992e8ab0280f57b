"""A video's HLS rendition and poster: ``GET /v1/files/{file_id}/hls/{name}`` and their
``artefacts`` in ``GET /v1/files/{file_id}`` (docs/transforms.md; seed 002: HLS streaming).

The gateway only reads ``file_videos`` (the commit stage writes it) and the playlists beside the
original. A playlist is opened by the owner's API key (``Authorization: Bearer …``) or, without
any header, by a signed URL: ``?expires=…&signature=…``, HMAC-SHA256 of the route's path (so of
the file id and the playlist's name) and the expiry (``shared.adapters.signed_urls``: a
*resource* signature), valid for ``S3_PRESIGN_TTL_S``. ``GET /v1/files/{file_id}`` gives
the playlists' URLs signed so, and the master playlist served names its media playlists by
signed URLs too, so a player given the master's URL needs no header at all (Safari's native
HLS, AVPlayer, VLC and a ``<video src>`` send none). A forged, altered or expired signature is
403 ``forbidden`` with the reason, as on ``/v1/objects``. A signed URL is checked on its own,
like a presigned URL: it stays good until its expiry even if the key that asked for it is
revoked meanwhile.

After either, the file is checked as on every file route: another owner's file is 404
``not_found`` (by key), a deleted one too, a quarantined one 410 ``quarantined``. The playlists
are served rewritten (``shared.hls.rewrite_playlist``): the master's media playlists point at
this route (signed), a media playlist's segments at presigned URLs (S3's, or the gateway's
signed ``/v1/objects/...`` with ``SLUICE_STORAGE_BACKEND=local``) valid for
``S3_PRESIGN_TTL_S``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from services.gateway.auth import require_owner
from services.gateway.deps import GatewayDeps, get_deps
from services.gateway.errors import ApiError
from services.gateway.repo import fetch_file, fetch_owner, fetch_video
from services.gateway.schemas import ErrorBody, HlsArtefact, PosterArtefact, RenditionOut
from shared.adapters.signed_urls import UrlSigner
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
    ``/v1/files/3f…/hls/master.m3u8``; also the resource its signature covers."""
    return f"/v1/files/{file_id}/hls/{name}"


def signed_hls_url(
    signer: UrlSigner, file_id: uuid.UUID, name: str, ttl_s: int, *, now: float | None = None
) -> str:
    """:func:`hls_url` signed for ``ttl_s`` seconds from ``now`` (Unix seconds; default the
    clock), e.g. ``/v1/files/3f…/hls/720p.m3u8?expires=1767225600&signature=9c…``: it opens that
    playlist of that file only, without an API key."""
    path = hls_url(file_id, name)
    return f"{path}?{signer.resource_query(path, ttl_s, now=now)}"


def signed_master(
    master: str, signer: UrlSigner, file_id: uuid.UUID, ttl_s: int, *, now: float | None = None
) -> str:
    """The stored master playlist ``master`` as served: each media playlist it lists named by
    its :func:`signed_hls_url` (valid ``ttl_s`` seconds from ``now``), so a player given only
    the master's signed URL reaches every rendition without a header.

    Raises:
        ValueError: the playlist lists something that is not a rendition's file
            (``shared.hls.rewrite_playlist``).
    """
    return rewrite_playlist(master, lambda n: signed_hls_url(signer, file_id, n, ttl_s, now=now))


async def video_artefacts(
    file_id: uuid.UUID,
    video: Any,
    storage: ObjectStore,
    signer: UrlSigner,
    ttl_s: int,
    stored: bool,
) -> list[HlsArtefact | PosterArtefact]:
    """The ``artefacts`` of a file whose ``file_videos`` row is ``video`` (or ``None``): the
    master playlist and each rendition's media playlist by signed URLs (:func:`signed_hls_url`,
    valid ``ttl_s`` seconds), then each poster thumbnail (a presigned URL when ``stored``)."""
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
                    url=signed_hls_url(signer, file_id, f"{r['name']}.m3u8", ttl_s),
                )
                for r in video["renditions"] or []
            ],
            url=signed_hls_url(signer, file_id, HLS_MASTER, ttl_s),
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


async def playlist_owner(
    request: Request,
    deps: GatewayDeps,
    file_id: uuid.UUID,
    name: str,
    expires: int | None,
    signature: str | None,
) -> str:
    """The owner whose file the request may read: by the signed URL's ``expires`` (Unix
    seconds) and ``signature`` when the query has either, else by the API key (module
    docstring). A signed request is not asked for a key, and a key sent with it is not read.

    Raises:
        ApiError: 401 ``unauthorized`` (no signature, and no valid key), 403 ``forbidden``
            (half a signed URL, a signature that does not match this file and name, or one
            past its expiry; the message says which), 404 ``not_found`` (signed, but the file
            is deleted or was never recorded).
        DatabaseUnavailable: PostgreSQL unreachable (answered 503).
    """
    if expires is None and signature is None:
        return await require_owner(request, deps)
    if expires is None or signature is None:
        raise ApiError(403, "forbidden", "playlist URL refused: it needs expires and signature")
    problem = deps.signer.resource_problem(hls_url(file_id, name), expires, signature)
    if problem is not None:
        raise ApiError(403, "forbidden", f"playlist URL refused: {problem}")
    owner = await fetch_owner(deps.pool, file_id)
    if owner is None:
        raise ApiError(404, "not_found", "unknown file (or not yet recorded)")
    structlog.contextvars.bind_contextvars(owner=owner)
    return owner


@router.get(
    "/v1/files/{file_id}/hls/{name}",
    responses={
        200: {
            "content": {PLAYLIST_TYPE: {}},
            "description": "The playlist, its URIs made fetchable (RFC 8216).",
        },
        401: {
            "model": ErrorBody,
            "description": "Not signed, and a missing, unknown or revoked API key.",
        },
        403: {
            "model": ErrorBody,
            "description": "Signed URL refused (`forbidden`): the signature does not match "
            "this file and playlist, or it has expired.",
        },
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
    request: Request,
    deps: Deps,
    expires: Annotated[
        int | None, Query(description="Expiry of a signed URL, Unix seconds.")
    ] = None,
    signature: Annotated[
        str | None,
        Query(max_length=128, description="Signature of a signed URL: HMAC-SHA256, hex."),
    ] = None,
) -> Response:
    """The master playlist of the file's current version (its media playlists by signed URLs
    of this route), or a media playlist (its segments as presigned URLs), every URL valid for
    ``S3_PRESIGN_TTL_S``; to the owner's API key or a signed URL
    (:func:`playlist_owner`)."""
    structlog.contextvars.bind_contextvars(file_id=str(file_id))
    owner = await playlist_owner(request, deps, file_id, name, expires, signature)
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
    ttl_s = deps.settings.s3.presign_ttl_s
    try:
        if name == HLS_MASTER:
            served = signed_master(body, deps.signer, file_id, ttl_s)
        else:
            urls = {
                n: await deps.storage.presigned_get_url(prefix + n, ttl_s)
                for n in listed_names(body)
            }
            served = rewrite_playlist(body, lambda n: urls[n])
    except ValueError as exc:
        log.warning("gateway.hls_foreign_uri", key=key, error=str(exc))
        raise ApiError(404, "hls_missing", "the playlist object is damaged") from None
    return Response(
        served,
        media_type=PLAYLIST_TYPE,
        headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
    )
