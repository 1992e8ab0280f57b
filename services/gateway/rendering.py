"""``GET /v1/files/{id}/render``: an image rendition within set bounds, cached in object storage.

docs/files-api.md § Renditions on demand. The owner check is the content route's (another
owner's, an unknown or a deleted file is 404; a quarantined one 410; a lost object 404
``object_missing``); the parameters are checked against an allow-list (``SLUICE_RENDER_SIZES``,
the three fits, the three formats), anything else 400 naming the allowed values, so the cache
cannot be flooded with variants. A hit streams the stored rendition; a miss renders it
(:mod:`services.gateway.renditions`), stores it, then serves it. ``ETag`` is a strong validator
of the source version's SHA-256 and the parameters; ``If-None-Match`` → 304. A version kept in
the PostgreSQL fallback (S3 was down when it was stored) is rendered from its bytes there,
uncached (``x-sluice-cache: bypass``): its cache key would be made of an object key it does not
have yet.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Header, Query
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from services.gateway.auth import Owner
from services.gateway.deps import GatewayDeps, get_deps
from services.gateway.download import open_body, report_missing
from services.gateway.errors import ApiError
from services.gateway.files import not_found
from services.gateway.renditions import RENDITION_CACHE, RenditionRequest
from services.gateway.repo import fetch_fallback_bytes, fetch_file
from services.gateway.schemas import ErrorBody
from services.gateway.version_queries import fetch_version
from shared.adapters.row_cipher import RowCipher
from shared.errors import SourceMissing, ThumbnailError
from shared.imaging.render import is_thumbnailable
from shared.imaging.rendition import FITS, FORMATS, MEDIA_TYPES, Fit, Format
from shared.naming import rendition_key
from shared.settings import RenderSettings
from shared.status import FileStatus

router = APIRouter()
Deps = Annotated[GatewayDeps, Depends(get_deps)]
_IMAGE_TYPES = "image/jpeg, image/png, image/gif, image/webp, image/heic, image/heif"
_EXTENSIONS: dict[Format, str] = {"webp": "webp", "jpeg": "jpg", "png": "png"}


def parse_request(
    settings: RenderSettings, w: str | None, h: str | None, fit: str | None, fmt: str | None
) -> RenditionRequest:
    """The rendition asked for, or a 400 ``invalid_request`` naming the allowed values.

    ``w``/``h`` must be in ``settings.sizes`` (one may be missing: the ratio is kept, and the
    fit is then ``contain``); ``fit`` one of :data:`FITS` (default ``contain``); ``format`` one
    of :data:`FORMATS` (default ``webp``).
    """
    allowed = ", ".join(map(str, settings.sizes))

    def size(name: str, value: str | None) -> int | None:
        if value is None:
            return None
        if not value.isascii() or not value.isdigit() or int(value) not in settings.sizes:
            raise ApiError(400, "invalid_request", f"{name}: must be one of {allowed}")
        return int(value)

    width, height = size("w", w), size("h", h)
    if width is None and height is None:
        raise ApiError(400, "invalid_request", f"give w, h or both, each one of {allowed}")
    chosen_fit = fit or "contain"
    if chosen_fit not in FITS:
        raise ApiError(400, "invalid_request", f"fit: must be one of {', '.join(FITS)}")
    chosen_format = fmt or "webp"
    if chosen_format not in FORMATS:
        raise ApiError(400, "invalid_request", f"format: must be one of {', '.join(FORMATS)}")
    if width is None or height is None:
        chosen_fit = "contain"  # one side: the ratio decides the other, every fit is the same
    return RenditionRequest(width, height, _as_fit(chosen_fit), _as_format(chosen_format))


def _as_fit(value: str) -> Fit:
    return next(fit for fit in FITS if fit == value)


def _as_format(value: str) -> Format:
    return next(fmt for fmt in FORMATS if fmt == value)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` or is ``*`` (RFC 9110 § 13.1.2: weak
    comparison, so ``W/"x"`` matches ``"x"``)."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


@router.get(
    "/v1/files/{file_id}/render",
    responses={
        200: {
            "content": {media: {} for media in MEDIA_TYPES.values()},
            "description": "The rendition (`x-sluice-cache: hit` or `miss`).",
        },
        304: {"description": "`If-None-Match` names the rendition's ETag."},
        400: {
            "model": ErrorBody,
            "description": "`w`, `h`, `fit` or `format` outside the allowed values (named).",
        },
        401: {"model": ErrorBody, "description": "Missing, unknown or revoked API key."},
        404: {
            "model": ErrorBody,
            "description": "No such file (or version) for this owner; or its object is lost.",
        },
        409: {"model": ErrorBody, "description": "Not in object storage (yet), or rejected."},
        410: {"model": ErrorBody, "description": "Quarantined: a rescan found it infected."},
        415: {"model": ErrorBody, "description": "The file is not an image (e.g. a PDF)."},
        422: {"model": ErrorBody, "description": "The image cannot be decoded."},
        429: {"model": ErrorBody, "description": "Too many renders in progress (Retry-After)."},
        503: {"model": ErrorBody, "description": "Object storage unreachable."},
    },
    response_model=None,
    summary="An image rendition: resized, cropped or converted, cached",
)
async def render_file(
    file_id: uuid.UUID,
    owner: Owner,
    deps: Deps,
    w: Annotated[
        str | None, Query(description="Width, pixels: one of SLUICE_RENDER_SIZES.")
    ] = None,
    h: Annotated[
        str | None, Query(description="Height, pixels: one of SLUICE_RENDER_SIZES.")
    ] = None,
    fit: Annotated[str | None, Query(description="contain (default), cover or fill.")] = None,
    format: Annotated[str | None, Query(description="webp (default), jpeg or png.")] = None,
    version: Annotated[
        int | None, Query(ge=1, description="A version number; default: the current one.")
    ] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Any:
    """The rendition of the file's current version (or ``version``), from the cache or made.

    Raises:
        ApiError: 400, 404, 409, 410, 415, 422, 429 (see ``responses``); StorageUnavailable is
            answered 503.
    """
    structlog.contextvars.bind_contextvars(file_id=str(file_id))
    request = parse_request(deps.settings.render, w, h, fit, format)
    row = await fetch_file(deps.pool, file_id, owner)
    if row is None:
        raise not_found()
    if row["status"] == FileStatus.QUARANTINED:
        raise ApiError(410, "quarantined", f"the file is quarantined: {row['status_reason']}")
    source: Any = row
    if version is not None and version != row["current_version"]:
        found = await fetch_version(deps.pool, file_id, owner, version)
        if found is None:
            raise ApiError(404, "not_found", f"this file has no version {version}")
        source = {**dict(found), "current_version": found["version_number"]}
    if not is_thumbnailable(source["content_type"]):
        raise ApiError(
            415,
            "not_an_image",
            f"{source['content_type']} is not an image; renditions are made of {_IMAGE_TYPES}",
        )
    if source["status"] == FileStatus.CORRUPTED:
        raise ApiError(404, "object_missing", "the stored object is lost or damaged")
    if source["object_key"] is None and not source["in_fallback"]:
        if source["status"] == FileStatus.REJECTED:
            raise ApiError(409, "not_stored", "the file was rejected")
        raise ApiError(
            409, "not_stored", f"not stored yet (status: {source['status']}); retry later"
        )
    etag = request.etag(source["sha256"])
    headers = {
        "ETag": etag,
        "Cache-Control": f"private, max-age={deps.settings.render.max_age_s}",
        "X-Content-Type-Options": "nosniff",
    }
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    media_type = MEDIA_TYPES[request.format]
    if source["object_key"] is None:
        return await _render_from_fallback(deps, file_id, owner, source, request, headers)
    key = rendition_key(
        source["object_key"],
        request.width,
        request.height,
        request.fit,
        _EXTENSIONS[request.format],
    )
    hit = await _cached(deps, key, media_type, headers)
    if hit is not None:
        return hit
    renditions = deps.renditions
    async with renditions.lock(key):  # one render per key in this process
        hit = await _cached(deps, key, media_type, headers)
        if hit is not None:
            return hit
        RENDITION_CACHE.labels("miss").inc()
        with renditions.slot(owner):
            try:
                data = await deps.storage.get_bytes(source["object_key"])
            except SourceMissing:
                await report_missing(deps.publisher, deps.storage, source)
                raise ApiError(404, "object_missing", "the stored object is missing") from None
            try:
                rendition = await renditions.render(data, source["content_type"], request)
            except ThumbnailError as exc:
                raise ApiError(422, "undecodable_image", exc.message) from None
            await renditions.store(deps.storage, key, rendition, source["sha256"])
    headers["x-sluice-cache"] = "miss"
    return Response(rendition.data, media_type=media_type, headers=headers)


async def _render_from_fallback(
    deps: GatewayDeps,
    file_id: uuid.UUID,
    owner: str,
    source: Any,
    request: RenditionRequest,
    headers: dict[str, str],
) -> Response:
    """The rendition of a version whose bytes are in the PostgreSQL fallback, made from them and
    not stored (S3 is likely down; the version has no object key to name it by).

    Raises:
        ApiError: 409 ``not_stored`` if the row left the fallback meanwhile (migrated back:
            retry), 422 ``undecodable_image``, 429 ``too_many_renders``.
    """
    cipher = RowCipher.from_settings(deps.settings.fallback)
    version = source["current_version"]
    data = await fetch_fallback_bytes(deps.pool, file_id, version, owner, cipher)
    if data is None:
        raise ApiError(409, "not_stored", "moved out of the PostgreSQL fallback; retry")
    RENDITION_CACHE.labels("bypass").inc()
    with deps.renditions.slot(owner):
        try:
            rendition = await deps.renditions.render(data, source["content_type"], request)
        except ThumbnailError as exc:
            raise ApiError(422, "undecodable_image", exc.message) from None
    headers["x-sluice-cache"] = "bypass"
    return Response(rendition.data, media_type=MEDIA_TYPES[request.format], headers=headers)


async def _cached(
    deps: GatewayDeps, key: str, media_type: str, headers: dict[str, str]
) -> StreamingResponse | None:
    """The stored rendition at ``key``, streamed, or ``None`` when there is none yet."""
    try:
        info, body, close = await open_body(deps.storage, key, deps.spool.chunk_bytes)
    except SourceMissing:
        return None
    RENDITION_CACHE.labels("hit").inc()
    return StreamingResponse(
        body,
        media_type=media_type,
        headers={**headers, "Content-Length": str(info.size_bytes), "x-sluice-cache": "hit"},
        background=BackgroundTask(close),
    )
