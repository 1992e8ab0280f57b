"""A file's versions: ``POST /v1/files/{id}/versions`` uploads one, ``GET …/versions`` lists
them, ``GET …/versions/{n}`` and ``…/versions/{n}/content`` read one (docs/files-api.md).

A new version takes the same multipart form, the same upload policy, the same owner slot and
the same confirmed publish as ``POST /v1/files`` (:func:`services.gateway.upload._accept`); it
goes through the whole pipeline (scan, store under its own key, thumbnails, commit) and never
disturbs the versions before it. Its number is reserved before the body is read
(:class:`shared.adapters.versions.VersionNumbers`): unique, never reused, even for an upload
then refused. The file's current version stays its latest ``available`` one (the commit stage's
``transition``).

Only the file's owner may add or read versions; anyone else gets 404, as for an unknown file.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Path, Request, Response

from services.gateway.auth import Owner
from services.gateway.deps import GatewayDeps, get_deps
from services.gateway.download import (
    Download,
    fallback_original,
    open_original,
    quote_name,
    report_missing,
)
from services.gateway.errors import ApiError
from services.gateway.files import not_found
from services.gateway.repo import fetch_fallback_bytes, fetch_owner
from services.gateway.schemas import ErrorBody, FileUrls, StageEvent, ThumbnailOut, UploadAccepted
from services.gateway.upload import _ERRORS as UPLOAD_ERRORS
from services.gateway.upload import _FORM_SCHEMA, _accept
from services.gateway.version_queries import fetch_version, fetch_version_history, fetch_versions
from services.gateway.version_schemas import VersionDetail, VersionList, VersionSummary
from shared.adapters.row_cipher import RowCipher
from shared.adapters.versions import VersionNumbers
from shared.errors import SourceMissing
from shared.events import utcnow
from shared.status import UNSERVED, FileStatus
from shared.telemetry import metrics

log = structlog.get_logger("sluice.gateway")
router = APIRouter()
Deps = Annotated[GatewayDeps, Depends(get_deps)]
Number = Annotated[int, Path(ge=1, le=2**31 - 1, description="Version number, from 1.")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing, unknown or revoked API key."},
    404: {
        "model": ErrorBody,
        "description": "No such file (or version) for this owner, or not yet recorded.",
    },
    422: {"model": ErrorBody, "description": "A file id or version number that is not one."},
}


def _summary(row: Any) -> dict[str, Any]:
    n = row["version_number"]
    return {
        "version_number": n,
        "status": row["status"],
        "current": n == row["current_version"],
        "original_name": row["original_name"],
        "content_type": row["content_type"],
        "size_bytes": row["size_bytes"],
        "sha256": row["sha256"],
        "received_at": row["received_at"],
        "rejection_reason": row["rejection_reason"],
        "scanner": row["scanner"],
        "signature_version": row["signature_version"],
        "version_url": f"/v1/files/{row['file_id']}/versions/{n}",
    }


def _as_file_row(row: Any) -> dict[str, Any]:
    """A version row in the shape the download helpers take (``current_version`` = this one)."""
    described = dict(row)
    described["current_version"] = row["version_number"]
    return described


@router.post(
    "/v1/files/{file_id}/versions",
    status_code=202,
    response_model=UploadAccepted,
    responses={
        **UPLOAD_ERRORS,
        404: {
            "model": ErrorBody,
            "description": "No such file for this owner (or not yet "
            "recorded): a version is added only to a file the commit stage has recorded.",
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": _FORM_SCHEMA}},
        }
    },
    summary="Upload a new version of a file",
)
async def upload_version(
    file_id: uuid.UUID, request: Request, response: Response, owner: Owner, deps: Deps
) -> UploadAccepted:
    """Reserve the next version number, stream the form to the spool, publish its
    ``file.received`` (``version_number`` = n), answer 202 with ``Location:
    /v1/files/{id}/versions/{n}``. Refusals are those of ``POST /v1/files``, plus 404."""
    structlog.contextvars.bind_contextvars(file_id=str(file_id))
    try:
        with deps.uploads.hold(owner):
            if await fetch_owner(deps.pool, file_id) != owner:
                raise not_found()
            event_id = uuid.uuid4()
            number = await VersionNumbers(deps.pool).reserve(file_id, owner, event_id)
            log.info("gateway.version_reserved", version_number=number)
            accepted = await _accept(
                request, response, owner, deps, version=(file_id, number, event_id)
            )
    except ApiError as exc:
        metrics.UPLOADS.labels(exc.code).inc()
        raise
    metrics.UPLOADS.labels("accepted").inc()
    metrics.UPLOAD_BYTES.inc(accepted.size_bytes)
    return accepted


@router.get(
    "/v1/files/{file_id}/versions",
    response_model=VersionList,
    responses=_NOT_FOUND,
    summary="List a file's versions",
)
async def list_versions(file_id: uuid.UUID, owner: Owner, deps: Deps) -> VersionList:
    """Every recorded version of the caller's file, oldest first, each with its own SHA-256."""
    rows = await fetch_versions(deps.pool, file_id, owner)
    if not rows:
        raise not_found()
    return VersionList(
        file_id=file_id,
        current_version=rows[0]["current_version"],
        versions=[VersionSummary(**_summary(row)) for row in rows],
    )


@router.get(
    "/v1/files/{file_id}/versions/{version_number}",
    response_model=VersionDetail,
    responses=_NOT_FOUND,
    summary="One version of a file",
)
async def get_version(
    file_id: uuid.UUID, version_number: Number, owner: Owner, deps: Deps
) -> VersionDetail:
    """One version: status, SHA-256, where its bytes are, presigned URLs once stored, its
    thumbnails and its own stage history."""
    row = await fetch_version(deps.pool, file_id, owner, version_number)
    if row is None:
        raise not_found()
    storage, ttl_s = deps.storage, deps.settings.s3.presign_ttl_s
    stored = (
        row["object_key"] is not None
        and row["bucket"] == storage.bucket
        and row["status"] not in UNSERVED  # corrupted or quarantined: no URL
    )
    content = f"/v1/files/{file_id}/versions/{version_number}/content"
    urls: FileUrls | None = None
    if stored or row["in_fallback"]:
        urls = FileUrls(
            original=await storage.presigned_get_url(
                row["object_key"],
                ttl_s,
                download_name=quote_name(row["original_name"]),
                content_type=row["content_type"],
            )
            if stored
            else None,
            content=content,
            expires_at=utcnow() + timedelta(seconds=ttl_s),
        )
    thumbnails = [
        ThumbnailOut(
            size_px=thumb["size_px"],
            width=thumb["width"],
            height=thumb["height"],
            size_bytes=thumb["size_bytes"],
            content_type=thumb.get("content_type", "image/webp"),
            url=await storage.presigned_get_url(thumb["key"], ttl_s) if stored else None,
        )
        for thumb in row["thumbnails"] or []
    ]
    history = await fetch_version_history(deps.pool, file_id, version_number)
    return VersionDetail(
        **_summary(row),
        stored=stored,
        object_key=row["object_key"] if stored else None,
        urls=urls,
        thumbnails=thumbnails,
        thumbnail_error=row["thumbnail_error"],
        history=[StageEvent(**dict(event)) for event in history],
    )


@router.head("/v1/files/{file_id}/versions/{version_number}/content", include_in_schema=False)
@router.get(
    "/v1/files/{file_id}/versions/{version_number}/content",
    responses={
        **_NOT_FOUND,
        200: {"content": {"application/octet-stream": {}}, "description": "The version."},
        206: {"content": {"application/octet-stream": {}}, "description": "The Range asked."},
        409: {"model": ErrorBody, "description": "This version is not stored (yet), or rejected."},
        410: {"model": ErrorBody, "description": "Quarantined: a rescan found it infected."},
        416: {"model": ErrorBody, "description": "No byte of the Range is in the version."},
        503: {"model": ErrorBody, "description": "Object storage unreachable."},
    },
    response_model=None,
    summary="Download one version",
)
async def get_version_content(
    file_id: uuid.UUID, version_number: Number, owner: Owner, deps: Deps, download: Download
) -> Any:
    """Stream the version's bytes with its type, length, name and SHA-256 (``x-sluice-sha256``,
    ``ETag``), from S3 or from the PostgreSQL fallback; a lost object is 404 ``object_missing``
    and is reported as ``file.corrupted`` of that version (seed 004)."""
    structlog.contextvars.bind_contextvars(file_id=str(file_id))
    found = await fetch_version(deps.pool, file_id, owner, version_number)
    if found is None:
        raise not_found()
    row = _as_file_row(found)
    if row["status"] == FileStatus.QUARANTINED:  # a rescan found this version infected
        raise ApiError(
            410, "quarantined", "this version is quarantined: a rescan found it infected"
        )
    if row["in_fallback"]:
        cipher = RowCipher.from_settings(deps.settings.fallback)
        data = await fetch_fallback_bytes(deps.pool, file_id, version_number, owner, cipher)
        if data is not None:
            return fallback_original(row, data, download)
    if row["status"] == FileStatus.CORRUPTED:
        raise ApiError(404, "object_missing", "the stored object of this version is lost")
    if row["object_key"] is None:
        if row["status"] == FileStatus.REJECTED:
            reason = row["rejection_reason"] or FileStatus.REJECTED
            raise ApiError(409, "not_stored", f"this version was rejected: {reason}")
        raise ApiError(409, "not_stored", f"not stored yet (status: {row['status']})")
    try:
        return await open_original(deps.storage, row, deps.spool.chunk_bytes, download=download)
    except SourceMissing:
        await report_missing(deps.publisher, deps.storage, row)
        raise ApiError(404, "object_missing", "the stored object is missing") from None
