"""The text the transforms extracted: ``GET /v1/files/{file_id}/text`` and the ``artefacts``
of ``GET /v1/files/{file_id}`` (docs/transforms.md; seeds 002 and 003: PDF text, OCR).

The gateway only reads ``file_texts`` (the commit stage writes it) and the text object beside
the original. The owner is checked like on every file route: another owner's file is 404
``not_found``. While a file has no text, the 404 says why: extraction is pending, failed (and
why), or not applicable (a type no transform reads, a transform not enabled, a file not stored).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends
from starlette.responses import Response

from services.gateway.auth import Owner
from services.gateway.deps import GatewayDeps, get_deps
from services.gateway.errors import ApiError
from services.gateway.repo import fetch_file, fetch_text
from services.gateway.schemas import ErrorBody, TextArtefact
from shared.errors import SourceMissing
from shared.settings import Settings
from shared.status import FileStatus
from shared.transforms import TEXT_CONTENT_TYPE, transform_for

log = structlog.get_logger("sluice.gateway")
router = APIRouter()
Deps = Annotated[GatewayDeps, Depends(get_deps)]
#: Statuses whose file no transform will read (they are never stored, or no longer).
_NEVER = (FileStatus.REJECTED, FileStatus.QUARANTINED, FileStatus.CORRUPTED)


def artefacts_of(file_id: uuid.UUID, text: Any) -> list[TextArtefact]:
    """The ``artefacts`` of a file whose ``file_texts`` row is ``text`` (or ``None``)."""
    if text is None or text["state"] != "extracted":
        return []
    return [
        TextArtefact(
            transform=text["transform"],
            content_type=TEXT_CONTENT_TYPE,
            size_bytes=text["size_bytes"],
            pages=text["pages"],
            ocr_pages=text["ocr_pages"],
            language=text["language"],
            document_metadata=text["document_metadata"] or {},
            search_truncated=text["search_truncated"],
            url=f"/v1/files/{file_id}/text",
        )
    ]


def text_error_of(text: Any) -> str | None:
    """Why the transform could not read the version (``file_texts.error``), or ``None``."""
    return None if text is None or text["state"] != "failed" else str(text["error"])


def _enabled(settings: Settings, transform: str) -> bool:
    return settings.pdftext.enabled if transform == "pdftext" else settings.ocr.enabled


@router.get(
    "/v1/files/{file_id}/text",
    responses={
        200: {"content": {"text/plain": {}}, "description": "The text, pages split by U+000C."},
        401: {"model": ErrorBody, "description": "Missing, unknown or revoked API key."},
        404: {
            "model": ErrorBody,
            "description": "No such file for this owner (`not_found`), or no text: "
            "`text_pending`, `text_failed` (with the reason), `text_not_applicable`.",
        },
        410: {"model": ErrorBody, "description": "Quarantined: a rescan found it infected."},
        503: {"model": ErrorBody, "description": "Object storage unreachable."},
    },
    response_model=None,
    summary="The text extracted from a PDF or an image",
)
async def get_text(file_id: uuid.UUID, owner: Owner, deps: Deps) -> Response:
    """The text the pdftext or ocr stage extracted from the file's current version, as UTF-8
    ``text/plain`` (pages separated by a form feed), with ``x-sluice-pages``."""
    structlog.contextvars.bind_contextvars(file_id=str(file_id))
    row = await fetch_file(deps.pool, file_id, owner)
    if row is None:
        raise ApiError(404, "not_found", "unknown file (or not yet recorded)")
    if row["status"] == FileStatus.QUARANTINED:  # a rescan found it infected: nothing served
        raise ApiError(410, "quarantined", f"the file is quarantined: {row['status_reason']}")
    text = await fetch_text(deps.pool, file_id, row["current_version"], owner)
    if text is not None and text["state"] == "failed":
        raise ApiError(
            404, "text_failed", f"text extraction ({text['transform']}) failed: {text['error']}"
        )
    if text is None:
        transform = transform_for(row["content_type"])
        if transform is None:
            raise ApiError(
                404,
                "text_not_applicable",
                f"no text extraction applies to {row['content_type']} (PDFs and images only)",
            )
        if not _enabled(deps.settings, transform) or row["status"] in _NEVER:
            why = "not enabled" if row["status"] not in _NEVER else f"file {row['status']}"
            raise ApiError(
                404, "text_not_applicable", f"no text extraction applies ({transform}: {why})"
            )
        raise ApiError(404, "text_pending", f"text extraction ({transform}) is pending")
    try:
        body = await deps.storage.get_bytes(text["text_key"])
    except SourceMissing:
        log.warning("gateway.text_missing", key=text["text_key"])
        raise ApiError(404, "text_missing", "the extracted text object is missing") from None
    return Response(
        body,
        media_type=TEXT_CONTENT_TYPE,
        headers={
            "x-sluice-pages": str(text["pages"]),
            "x-sluice-transform": str(text["transform"]),
            "X-Content-Type-Options": "nosniff",
        },
    )
