"""``POST /v1/files``: stream an upload into the spool and publish ``file.received``.

The answer is 202 once the event is safe: confirmed by RabbitMQ (publisher confirm, mandatory),
or, when the broker is down, restarting or does not confirm, written durably to the gateway's
event outbox (:mod:`shared.adapters.outbox`), which a relay publishes, in order and with the
same ``event_id``, once the broker is back. While events wait in the outbox, new ones queue
behind them, so they reach the broker in the order they were accepted. Only when the outbox
is at its bound (``SLUICE_GATEWAY_OUTBOX_MAX_EVENTS``) is the upload refused: 503 with
``Retry-After``, its spooled bytes removed (an ``.abandoned`` tombstone stays in case the broker
did take the event), so a client that retries never leaves an orphan behind.

The bytes go to the configured spool (``SLUICE_SPOOL_BACKEND``): the local directory, or the S3
quarantine bucket. With the quarantine bucket, S3 down means 503 ``storage_unavailable`` with
``Retry-After``: the multipart upload is aborted, no event is published, nothing is accepted.

The event is published from a PRODUCER span (a child of the request's SERVER span) whose W3C
``traceparent`` it carries, also through the outbox: the file's trace starts here and every
stage continues it.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from services.gateway.auth import Owner
from services.gateway.deps import GatewayDeps, get_deps
from services.gateway.edge import BodyTimeout
from services.gateway.errors import ApiError, unavailable
from services.gateway.form import read_upload
from services.gateway.publish import announce, remove_spooled
from services.gateway.schemas import ErrorBody, UploadAccepted
from shared.errors import StorageUnavailable
from shared.events import FileReceived
from shared.naming import spool_name
from shared.telemetry import metrics

log = structlog.get_logger("sluice.gateway")
router = APIRouter()

_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "The file. jpg/jpeg/png/gif/webp/heic/heif up to 10 MiB, pdf up to "
            "5 MiB (seed 000; limits from settings). The type is sniffed from the bytes and must "
            "match the name's extension and the part's Content-Type.",
        },
        "kind": {"type": "string", "maxLength": 64, "description": "Caller's category."},
        "metadata": {
            "type": "string",
            "description": "A JSON object kept with the file (SLUICE_GATEWAY_MAX_METADATA_BYTES).",
        },
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "Empty file, name over 1024 characters, malformed multipart.",
        401: "Missing, malformed, unknown or revoked API key.",
        408: "The next chunk of the body did not come within SLUICE_GATEWAY_BODY_READ_TIMEOUT_S.",
        413: "File (or form) larger than its type's limit.",
        415: "Type outside the policy, or sniffed type differs from extension/Content-Type.",
        422: "Missing `file` part, bad `kind` or `metadata`.",
        429: "Too many uploads of this owner in progress on this gateway (retry after "
        "`Retry-After` seconds).",
        503: "RabbitMQ is away and the event outbox is full, or (S3 spool) the quarantine bucket "
        "cannot be written (retry after `Retry-After` seconds).",
        507: "The spool's disk is full or below its free-space floor (retry after `Retry-After`).",
    }.items()
}


@router.post(
    "/v1/files",
    status_code=202,
    response_model=UploadAccepted,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": _FORM_SCHEMA}},
        }
    },
    summary="Upload a file",
)
async def upload_file(
    request: Request,
    response: Response,
    owner: Owner,
    deps: Annotated[GatewayDeps, Depends(get_deps)],
) -> UploadAccepted:
    """Stream the multipart body to the spool, publish ``file.received``, answer 202.

    The owner's upload slot is taken before the body is read (429 ``too_many_uploads`` when
    none is free, :mod:`services.gateway.slots`). Counted in ``sluice_uploads_total{outcome}``
    (``accepted`` or the refusal's error code) and, once accepted, ``sluice_upload_bytes_total``.
    """
    try:
        with deps.uploads.hold(owner):
            accepted = await _accept(request, response, owner, deps)
    except ApiError as exc:
        metrics.UPLOADS.labels(exc.code).inc()
        raise
    metrics.UPLOADS.labels("accepted").inc()
    metrics.UPLOAD_BYTES.inc(accepted.size_bytes)
    return accepted


async def _accept(
    request: Request,
    response: Response,
    owner: str,
    deps: GatewayDeps,
    version: tuple[uuid.UUID, int, uuid.UUID] | None = None,
) -> UploadAccepted:
    """Spool, describe and announce one upload: a new file, or with ``version`` =
    ``(file_id, version_number, event_id)`` a reserved new version of a recorded file
    (``services.gateway.versions``)."""
    started = time.perf_counter()
    file_id, version_number, event_id = version or (uuid.uuid4(), 1, uuid.uuid4())
    structlog.contextvars.bind_contextvars(file_id=str(file_id))
    try:
        upload = await read_upload(
            request.stream(),
            content_type=request.headers.get("content-type"),
            content_length=request.headers.get("content-length"),
            spool=deps.spool,
            policy=deps.policy,
            name=spool_name(file_id, version_number),
            max_metadata_bytes=deps.settings.gateway.max_metadata_bytes,
        )
    except ClientDisconnect:
        log.info("gateway.upload_aborted", reason="client disconnected")
        raise ApiError(400, "incomplete_body", "the client went away mid-upload") from None
    except BodyTimeout as exc:  # the partial spool file is gone (read_upload)
        raise ApiError(408, "request_timeout", exc.detail) from None
    except StorageUnavailable as exc:  # the quarantine bucket; its multipart upload is aborted
        log.warning("gateway.quarantine_unavailable", error=str(exc))
        raise unavailable(exc) from None
    spooled = time.perf_counter()
    source = deps.spool.reference(upload.name)
    try:
        event = FileReceived.new(
            event_id=event_id,
            file_id=file_id,
            version_number=version_number,
            owner=owner,
            source=source,
            size_bytes=upload.size_bytes,
            sha256=upload.sha256,
            content_type=upload.content_type,
            original_name=upload.original_name,
            kind=upload.kind,
            metadata=upload.metadata,
        )
    except ValidationError as exc:
        await remove_spooled(deps, source)
        raise ApiError(422, "invalid_request", f"cannot describe the file: {exc}") from None
    await announce(deps, event)
    status_url = f"/v1/files/{file_id}"
    response.headers["Location"] = (
        status_url if version_number == 1 else f"{status_url}/versions/{version_number}"
    )
    log.info(
        "gateway.file_received",
        event_id=str(event.event_id),
        size_bytes=upload.size_bytes,
        content_type=upload.content_type,
        upload_ms=round((time.perf_counter() - started) * 1000, 1),
        spool_ms=round((spooled - started) * 1000, 1),
        publish_ms=round((time.perf_counter() - spooled) * 1000, 1),
    )
    return UploadAccepted(
        file_id=file_id,
        status_url=status_url,
        sha256=upload.sha256,
        size_bytes=upload.size_bytes,
        content_type=upload.content_type,
        original_name=upload.original_name,
        version_number=version_number,
    )
