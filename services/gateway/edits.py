"""Edits of a file: ``PATCH /v1/files/{id}`` and ``POST /v1/files/{id}/copy``
(docs/files-api.md § Edits).

The gateway never writes file state. A PATCH is validated as an upload's fields are (the name
cleaned by ``shared.policy.clean_name`` and its extension the file's type's, ``kind`` and
``metadata`` by ``services.gateway.fields`` and the metadata cap), then published as
``file.updated`` with a publisher confirm; the commit stage applies it. The route subscribes to
the file's notices (the process's LISTEN connection, ``services.gateway.listener``) before
publishing, and answers 200 with the file's new state once the commit stage has recorded the
event, or, if that takes longer than ``SLUICE_FILES_EDIT_WAIT_S`` (the commit stage slow or
away), 202 with the event id: the edit is safe in RabbitMQ and will be applied.

A copy is a new file (new id, same owner) made from the current version with a server-side
copy checked by SHA-256 (:meth:`~shared.ports.ObjectStore.copy`, S3 CopyObject or the local
backend's checked copy) to the new file's own key, then announced by a ``file.received`` whose
source is that object: the pipeline commits it like any file (scanned again, thumbnails, commit;
the store stage finds the object already there with the right SHA-256). If the event cannot
be confirmed the copy is deleted again, so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from services.gateway.auth import Owner
from services.gateway.deps import GatewayDeps, get_deps
from services.gateway.download import report_missing
from services.gateway.errors import ApiError, unavailable
from services.gateway.fields import parse_kind, parse_metadata
from services.gateway.files import get_file, not_found
from services.gateway.repo import fetch_file
from services.gateway.schemas import ErrorBody, FileDetail
from services.gateway.streams import EventStreams, get_streams
from services.gateway.version_queries import event_recorded
from services.gateway.version_schemas import CopyAccepted, EditPending, FileEdit
from shared.errors import (
    BrokerUnavailable,
    ChecksumMismatch,
    PolicyRefusal,
    SourceMissing,
    StorageUnavailable,
)
from shared.events import FileReceived, FileUpdated, utcnow
from shared.naming import object_key
from shared.policy import UploadPolicy, clean_name, compact_json
from shared.status import FileStatus

log = structlog.get_logger("sluice.gateway")
router = APIRouter()
Deps = Annotated[GatewayDeps, Depends(get_deps)]
Streams = Annotated[EventStreams, Depends(get_streams)]
_COMMON: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing, unknown or revoked API key."},
    404: {"model": ErrorBody, "description": "No such file for this owner (or not yet recorded)."},
    503: {
        "model": ErrorBody,
        "description": "RabbitMQ did not confirm the event, or PostgreSQL or object storage "
        "is unreachable (retry after `Retry-After` seconds).",
    },
}


def _refused(exc: PolicyRefusal) -> ApiError:
    return ApiError(413 if exc.code == "too_large" else 422, exc.code, exc.message)


def check_name(policy: UploadPolicy, raw: str, content_type: str) -> str:
    """The new name of a file of ``content_type``, cleaned as an upload's; its extension must
    be the one of the file's type (seed 000: MIME type and extension agree).

    Raises:
        ApiError: 422 ``name_too_long``, ``invalid_request`` or ``unsupported_type``.
    """
    try:
        name = clean_name(raw)
    except PolicyRefusal as exc:
        raise _refused(exc) from None
    claimed, actual = policy.by_extension(name), policy.by_sniffed(content_type)
    if claimed is None or (actual is not None and claimed is not actual):
        accepted = sorted(actual.extensions) if actual else policy.extensions
        raise ApiError(
            422,
            "unsupported_type",
            f"the name {name!r} does not fit the file's type {content_type}: accepted "
            f"extensions are {', '.join(accepted)}",
        )
    return name


def edited_fields(edit: FileEdit, row: Any, deps: GatewayDeps) -> dict[str, Any]:
    """The fields ``edit`` sets, validated as an upload's, keyed by event field.

    Raises:
        ApiError: 422 nothing to change or a bad value; 413 metadata over its cap.
    """
    sent = edit.model_fields_set
    if not sent:
        raise ApiError(422, "invalid_request", "send at least one of original_name, kind, metadata")
    fields: dict[str, Any] = {}
    if "original_name" in sent:
        if edit.original_name is None:
            raise ApiError(422, "invalid_request", "`original_name` cannot be null")
        fields["original_name"] = check_name(deps.policy, edit.original_name, row["content_type"])
    if "kind" in sent:
        fields["kind"] = parse_kind(None if edit.kind is None else edit.kind.encode())
    if "metadata" in sent:
        metadata = parse_metadata(json.dumps(edit.metadata or {}).encode())
        size, cap = len(compact_json(metadata)), deps.settings.gateway.max_metadata_bytes
        if size > cap:
            raise ApiError(
                413, "too_large", f"the metadata is {size} bytes of JSON, over the limit of {cap}"
            )
        fields["metadata"] = metadata
    return fields


@router.patch(
    "/v1/files/{file_id}",
    response_model=FileDetail,
    responses={
        **_COMMON,
        202: {
            "model": EditPending,
            "description": "Published, not applied within SLUICE_FILES_EDIT_WAIT_S; it will be.",
        },
        413: {"model": ErrorBody, "description": "`metadata` over its cap."},
        422: {
            "model": ErrorBody,
            "description": "Nothing to change, an unknown field, a name outside the policy or "
            "not of the file's type, a bad `kind` or `metadata`.",
        },
    },
    summary="Change a file's name, kind or metadata",
)
async def edit_file(
    file_id: uuid.UUID, edit: FileEdit, owner: Owner, deps: Deps, streams: Streams
) -> Any:
    """Publish ``file.updated`` and answer the file's new state once the commit stage has
    applied it (200), or 202 with the event id after ``SLUICE_FILES_EDIT_WAIT_S``."""
    structlog.contextvars.bind_contextvars(file_id=str(file_id))
    row = await fetch_file(deps.pool, file_id, owner)
    if row is None or row["sha256"] is None:
        raise not_found()
    fields = edited_fields(edit, row, deps)
    described = {
        "original_name": row["original_name"],
        "kind": row["kind"],
        "metadata": row["metadata"] or {},
        **fields,
    }
    try:
        event = FileUpdated(
            event_id=uuid.uuid4(),
            occurred_at=utcnow(),
            file_id=file_id,
            version_number=row["current_version"],
            owner=owner,
            received_at=row["received_at"],
            source=row["source"],
            size_bytes=row["size_bytes"],
            sha256=row["sha256"],
            content_type=row["content_type"],
            fields=tuple(fields),
            **described,
        )
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", f"cannot describe the edit: {exc}") from None
    subscription = streams.listener.subscribe(file_id)
    try:
        try:
            await deps.publisher.publish(event)
        except BrokerUnavailable as exc:
            raise unavailable(exc) from None
        log.info("gateway.edit_published", event_id=str(event.event_id), fields=list(fields))
        if await _applied(deps, subscription, event.event_id):
            return await get_file(file_id, owner, deps)
    finally:
        subscription.close()
    pending = EditPending(event_id=event.event_id, status_url=f"/v1/files/{file_id}")
    return JSONResponse(pending.model_dump(mode="json"), status_code=202)


async def _applied(deps: GatewayDeps, subscription: Any, event_id: uuid.UUID) -> bool:
    """Whether the commit stage records ``event_id`` within ``SLUICE_FILES_EDIT_WAIT_S``
    (woken by the file's notices; read again at least every second, in case the LISTEN
    connection is being re-established)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deps.settings.files.edit_wait_s
    while True:
        if await event_recorded(deps.pool, event_id):
            return True
        left = deadline - loop.time()
        if left <= 0 or subscription.closing:
            return False
        await subscription.wait(min(left, 1.0))


@router.post(
    "/v1/files/{file_id}/copy",
    status_code=202,
    response_model=CopyAccepted,
    responses={
        **_COMMON,
        404: {
            "model": ErrorBody,
            "description": "No such file for this owner, or its stored object is missing "
            "(`object_missing`, reported as file.corrupted).",
        },
        409: {
            "model": ErrorBody,
            "description": "The current version is not available in object storage (in flight, "
            "rejected, corrupted, or in the PostgreSQL fallback), or its object's bytes do not "
            "match its SHA-256 (`checksum_mismatch`; nothing is copied).",
        },
    },
    summary="Copy a file server-side into a new file",
)
async def copy_file(
    file_id: uuid.UUID, owner: Owner, deps: Deps, response: Response
) -> CopyAccepted:
    """Copy the current version to a new file of the same owner, checked by SHA-256, and
    announce it (``file.received``); 202 with the new file's id."""
    structlog.contextvars.bind_contextvars(file_id=str(file_id))
    row = await fetch_file(deps.pool, file_id, owner)
    if row is None:
        raise not_found()
    storage = deps.storage
    if (
        row["status"] != FileStatus.AVAILABLE
        or row["object_key"] is None
        or row["bucket"] != storage.bucket
    ):
        raise ApiError(
            409, "not_stored", f"only an available file can be copied (status: {row['status']})"
        )
    new_id, received_at = uuid.uuid4(), utcnow()
    name = row["original_name"]
    policy = deps.policy
    if policy.by_extension(name) is not policy.by_sniffed(row["content_type"]):
        name = row["version_name"]  # renamed before this version of another type was current
    key = object_key(owner, new_id, received_at, name)
    try:
        await storage.copy(
            row["object_key"],
            key,
            sha256_hex=row["sha256"],
            size_bytes=row["size_bytes"],
            content_type=row["content_type"],
        )
    except SourceMissing:
        await report_missing(deps.publisher, storage, row)
        raise ApiError(404, "object_missing", "the stored object is missing") from None
    except ChecksumMismatch as exc:
        log.error("gateway.copy_mismatch", error=str(exc))
        raise ApiError(409, "checksum_mismatch", f"nothing copied: {exc.message}") from None
    except StorageUnavailable as exc:
        raise unavailable(exc) from None
    event = FileReceived.new(
        file_id=new_id,
        owner=owner,
        received_at=received_at,
        source=f"s3://{storage.bucket}/{key}",
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        content_type=row["content_type"],
        original_name=name,
        kind=row["kind"],
        metadata=row["metadata"] or {},
    )
    try:
        await deps.publisher.publish(event)
    except BrokerUnavailable as exc:
        await storage.delete(key)  # not announced: leave nothing behind
        raise unavailable(exc) from None
    log.info("gateway.file_copied", new_file_id=str(new_id), key=key)
    status_url = f"/v1/files/{new_id}"
    response.headers["Location"] = status_url
    return CopyAccepted(
        file_id=new_id,
        copied_from=file_id,
        version_number=row["current_version"],
        status_url=status_url,
        sha256=row["sha256"],
        size_bytes=row["size_bytes"],
        object_key=key,
    )
