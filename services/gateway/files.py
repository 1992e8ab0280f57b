"""Reading files back: status and stage history, the caller's list, and the content.

The gateway only reads ``files``, ``file_versions`` and ``file_events``; the commit consumer
writes them. Between the 202 of an upload and the commit consumer recording ``file.received``
there is no row yet: the status is then 404 ``unknown file (or not yet recorded)``.

An owner sees only its own files; anyone else's is 404, never 403, so ids cannot be probed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Query

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
from services.gateway.repo import (
    ListFilters,
    fetch_fallback_bytes,
    fetch_file,
    fetch_history,
    fetch_page,
    fetch_text,
    fetch_video,
)
from services.gateway.schemas import (
    ErrorBody,
    FileDetail,
    FileList,
    FileSummary,
    FileUrls,
    StageEvent,
    ThumbnailOut,
)
from services.gateway.texts import artefacts_of, text_error_of
from services.gateway.videos import video_artefacts, video_error_of
from shared.adapters.row_cipher import RowCipher
from shared.errors import SourceMissing
from shared.events import utcnow
from shared.naming import object_key
from shared.status import UNSERVED, FileStatus

log = structlog.get_logger("sluice.gateway")
router = APIRouter()
Deps = Annotated[GatewayDeps, Depends(get_deps)]
_NOT_FOUND = "unknown file (or not yet recorded)"
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing, unknown or revoked API key."},
    404: {"model": ErrorBody, "description": "No such file for this owner (or not yet recorded)."},
}


def not_found() -> ApiError:
    """The 404 for a file that is not the caller's, does not exist, or is not recorded yet."""
    return ApiError(404, "not_found", _NOT_FOUND)


def _summary(row: Any) -> dict[str, Any]:
    return {
        "file_id": row["file_id"],
        "status": row["status"],
        "original_name": row["original_name"],
        "content_type": row["content_type"],
        "kind": row["kind"],
        "size_bytes": row["size_bytes"],
        "sha256": row["sha256"],
        "received_at": row["received_at"],
        "status_url": f"/v1/files/{row['file_id']}",
        "attention": row["attention"],
    }


def _encode_cursor(received_at: datetime, file_id: uuid.UUID, query: str = "") -> str:
    raw = f"{received_at.isoformat()}|{file_id}|{query}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, query: str = "") -> tuple[datetime, uuid.UUID]:
    """The keyset of a cursor made for the same filters (``query``, their digest): a cursor
    of another query is 422, so a page never mixes two queries (cursors without a digest,
    made before filters existed, go with the unfiltered list)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, rest = raw.partition("|")
        file_id, _, made_for = rest.partition("|")
        keyset = datetime.fromisoformat(stamp), uuid.UUID(file_id)
    except (ValueError, binascii.Error):
        raise ApiError(422, "invalid_request", "cursor: not a cursor from this API") from None
    if made_for != query:
        raise ApiError(
            422, "invalid_request", "cursor: made for other filters; start again without it"
        )
    return keyset


def _query_digest(filters: ListFilters) -> str:
    """A short digest of the filters, carried in the cursor; empty without filters."""
    if filters == ListFilters():
        return ""
    text = repr(sorted((k, str(v)) for k, v in vars(filters).items() if v is not None))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_Aware = Annotated[
    datetime | None,
    Query(description="ISO 8601 with a time zone, e.g. `2026-12-01T00:00:00Z` (exclusive)."),
]


@router.get(
    "/v1/files",
    response_model=FileList,
    responses={
        **_ERRORS,
        422: {"model": ErrorBody, "description": "A bad filter, or a cursor of other filters."},
    },
    summary="List my files",
)
async def list_files(
    owner: Owner,
    deps: Deps,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 50,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
    status: Annotated[FileStatus | None, Query(description="Only files of this status.")] = None,
    kind: Annotated[str | None, Query(max_length=64, description="Only this kind.")] = None,
    content_type: Annotated[
        str | None, Query(max_length=255, description="Only this media type, e.g. `image/jpeg`.")
    ] = None,
    received_after: _Aware = None,
    received_before: _Aware = None,
    name_prefix: Annotated[
        str | None,
        Query(min_length=1, max_length=1024, description="Only names starting with this."),
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=256,
            description="Only files whose name or extracted text has these words (PostgreSQL "
            "full-text search, `websearch_to_tsquery('simple', q)`: `\"exact phrase\"`, `or`, "
            "`-word`); docs/transforms.md § Search.",
        ),
    ] = None,
) -> FileList:
    """The caller's files, newest first, ``limit`` per page (keyset pagination on
    ``(received_at, file_id)``: stable while files are added), narrowed by the filters; the
    cursor is bound to the filters it was made with."""
    for name, stamp in (("received_after", received_after), ("received_before", received_before)):
        if stamp is not None and stamp.tzinfo is None:
            raise ApiError(422, "invalid_request", f"{name}: give a time zone (e.g. Z)")
    filters = ListFilters(
        status=status,
        kind=kind,
        content_type=content_type,
        received_after=received_after,
        received_before=received_before,
        name_prefix=name_prefix,
        q=q,
    )
    digest = _query_digest(filters)
    after = _decode_cursor(cursor, digest) if cursor else None
    rows = await fetch_page(deps.pool, owner, after, limit + 1, filters)
    page = rows[:limit]
    next_cursor = (
        _encode_cursor(page[-1]["received_at"], page[-1]["file_id"], digest)
        if len(rows) > limit
        else None
    )
    return FileList(files=[FileSummary(**_summary(row)) for row in page], next_cursor=next_cursor)


@router.get(
    "/v1/files/{file_id}",
    response_model=FileDetail,
    responses=_ERRORS,
    summary="Status, stage history and presigned URLs of a file",
)
async def get_file(file_id: uuid.UUID, owner: Owner, deps: Deps) -> FileDetail:
    """Everything about one of the caller's files; presigned URLs once it is stored."""
    structlog.contextvars.bind_contextvars(file_id=str(file_id))
    row = await fetch_file(deps.pool, file_id, owner)
    if row is None:
        raise not_found()
    history = await fetch_history(deps.pool, file_id)
    text = await fetch_text(deps.pool, file_id, row["current_version"], owner)
    video = await fetch_video(deps.pool, file_id, row["current_version"], owner)
    storage, ttl_s = deps.storage, deps.settings.s3.presign_ttl_s
    stored = (
        row["object_key"] is not None
        and row["bucket"] == storage.bucket
        and row["status"] not in UNSERVED
    )
    if row["object_key"] is not None and row["bucket"] != storage.bucket:
        log.warning("gateway.foreign_bucket", bucket=row["bucket"], key=row["object_key"])
    urls: FileUrls | None = None
    thumbnails: list[ThumbnailOut] = []
    where = "postgresql" if row["in_fallback"] else "s3" if stored else None
    if row["in_fallback"] and not stored:
        urls = FileUrls(
            original=None,
            content=f"/v1/files/{file_id}/content",
            expires_at=utcnow() + timedelta(seconds=ttl_s),
        )
    if stored:
        urls = FileUrls(
            original=await storage.presigned_get_url(
                row["object_key"],
                ttl_s,
                download_name=quote_name(row["original_name"]),
                content_type=row["content_type"],
            ),
            content=f"/v1/files/{file_id}/content",
            expires_at=utcnow() + timedelta(seconds=ttl_s),
        )
    for thumb in row["thumbnails"] or []:
        url = await storage.presigned_get_url(thumb["key"], ttl_s) if stored else None
        thumbnails.append(
            ThumbnailOut(
                size_px=thumb["size_px"],
                width=thumb["width"],
                height=thumb["height"],
                size_bytes=thumb["size_bytes"],
                content_type=thumb.get("content_type", "image/webp"),  # rows before JPEG previews
                url=url,
            )
        )
    return FileDetail(
        **_summary(row),
        status_reason=row["status_reason"],
        metadata=row["metadata"] or {},
        version_number=row["current_version"],
        updated_at=row["updated_at"],
        stored=stored,
        storage=where,
        object_key=row["object_key"] if stored else None,
        urls=urls,
        thumbnails=thumbnails,
        thumbnail_error=row["thumbnail_error"],
        scanner=row["scanner"],
        signature_version=row["signature_version"],
        artefacts=[
            *artefacts_of(file_id, text),
            *await video_artefacts(file_id, video, storage, deps.signer, ttl_s, stored),
        ],
        text_error=text_error_of(text),
        video_error=video_error_of(video),
        history=[StageEvent(**dict(event)) for event in history],
    )


@router.head("/v1/files/{file_id}/content", include_in_schema=False)
@router.get(
    "/v1/files/{file_id}/content",
    responses={
        **_ERRORS,
        200: {"content": {"application/octet-stream": {}}, "description": "The original."},
        206: {"content": {"application/octet-stream": {}}, "description": "The Range asked."},
        409: {"model": ErrorBody, "description": "Not stored (yet), or rejected."},
        410: {"model": ErrorBody, "description": "Quarantined: a rescan found it infected."},
        416: {"model": ErrorBody, "description": "No byte of the Range is in the file."},
        503: {"model": ErrorBody, "description": "Object storage unreachable."},
    },
    response_model=None,
    summary="Download the original",
)
async def get_content(file_id: uuid.UUID, owner: Owner, deps: Deps, download: Download) -> Any:
    """Stream the original with its type, length, name and SHA-256: from S3, or from the
    PostgreSQL fallback while S3 was down and the version is not migrated back yet.

    A stored version whose object is missing is 404 ``object_missing``, and is reported as
    ``file.corrupted`` (seed 004).
    """
    structlog.contextvars.bind_contextvars(file_id=str(file_id))
    row = await fetch_file(deps.pool, file_id, owner)
    if row is None:
        raise not_found()
    if row["status"] == FileStatus.QUARANTINED:  # a rescan found it infected
        raise ApiError(410, "quarantined", f"the file is quarantined: {row['status_reason']}")
    if row["in_fallback"]:
        cipher = RowCipher.from_settings(deps.settings.fallback)
        data = await fetch_fallback_bytes(deps.pool, file_id, row["current_version"], owner, cipher)
        if data is not None:
            return fallback_original(row, data, download)
    if row["status"] == FileStatus.CORRUPTED:
        reason = row["status_reason"] or FileStatus.CORRUPTED
        raise ApiError(404, "object_missing", f"the stored object is lost or damaged: {reason}")
    if row["object_key"] is None:
        if row["status"] == FileStatus.REJECTED:
            reason = row["status_reason"] or FileStatus.REJECTED
            raise ApiError(409, "not_stored", f"the file was rejected: {reason}")
        if row["status"] == FileStatus.FALLBACK and row["size_bytes"] is not None:
            # Migrated back to S3 a moment ago; the commit stage has not recorded it yet.
            key = object_key(
                owner,
                file_id,
                row["version_received_at"],
                row["version_name"],
                row["current_version"],
            )
            try:
                return await open_original(deps.storage, row, deps.spool.chunk_bytes, key, download)
            except SourceMissing:
                pass
        raise ApiError(409, "not_stored", f"not stored yet (status: {row['status']})")
    try:
        return await open_original(deps.storage, row, deps.spool.chunk_bytes, download=download)
    except SourceMissing:
        await report_missing(deps.publisher, deps.storage, row)
        raise ApiError(404, "object_missing", "the stored object is missing") from None
