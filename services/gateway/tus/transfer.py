"""Taking one tus chunk (a PATCH body) into an upload, and completing an upload.

A chunk streams into the upload store's chunk writer, and is committed once the body ended, was
no longer than ``Upload-Length`` allows and, when an ``Upload-Checksum`` came with it, matched it
(460 ``checksum_mismatch`` otherwise, tus checksum extension). A client that goes away (or
stalls past ``SLUICE_GATEWAY_BODY_READ_TIMEOUT_S``) mid-PATCH keeps what arrived, as tus 1.0
asks ("the Server SHOULD accept PATCH requests which are partially transmitted and store the
bytes"), so the resume sends none of them again; unless the PATCH had an ``Upload-Checksum``,
which a part of the body cannot be checked against: then nothing of it is kept.

The policy of ``/v1/files`` applies (seed 000, :mod:`shared.policy`): once the first
:data:`~shared.policy.HEAD_BYTES` of the file (or the whole file, when smaller) have come, the
type is sniffed from them and must match the name's extension (and the declared ``filetype``),
and ``Upload-Length`` must be within that type's limit; a refusal removes the whole upload and
answers the same status and code as ``/v1/files`` (415 ``unsupported_type``, 413 ``too_large``).

Completion streams the chunks in order through the spool's ordinary writer
(``Spool.open_writer``, which hashes the whole file with SHA-256 and makes the usual
``spool://`` or ``quarantine://`` reference), announces ``file.received`` through
:func:`services.gateway.publish.announce` with the event id fixed at creation (a completion
retried after a crash publishes the same event, which the stages deduplicate), records the
upload as complete, and removes the chunks.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator

import structlog
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from services.gateway.deps import GatewayDeps
from services.gateway.edge import BodyTimeout
from services.gateway.errors import ApiError, refused
from services.gateway.fields import parse_kind
from services.gateway.fields import parse_metadata as parse_metadata_json
from services.gateway.publish import announce, remove_spooled
from services.gateway.tus.headers import parse_metadata
from shared.adapters.resumable import UploadState, read_head
from shared.adapters.versions import VersionNumbers
from shared.errors import PolicyRefusal
from shared.events import FileReceived
from shared.naming import spool_name
from shared.policy import HEAD_BYTES, clean_name, sniff
from shared.ports import SpoolWriter
from shared.telemetry import metrics

log = structlog.get_logger("sluice.gateway")


async def check_type(deps: GatewayDeps, state: UploadState, head: bytes) -> UploadState:
    """The upload with its sniffed type recorded, once ``head`` passed the policy.

    Raises:
        ApiError: the policy's 415/413/400/422; the upload is removed first.
    """
    fields = parse_metadata(state.metadata)
    try:
        name = clean_name(fields.get("filename", ""))
        sniffed = sniff(head)
        accepted = deps.policy.check(name, fields.get("filetype"), sniffed)
        if state.length > accepted.max_bytes:
            raise PolicyRefusal(
                "too_large",
                f"Upload-Length is {state.length} bytes, over the limit of {accepted.max_bytes} "
                f"bytes for {accepted.name}",
            )
    except PolicyRefusal as exc:
        await deps.spool.uploads.delete(state.upload_id)
        log.info("gateway.tus_refused", upload_id=state.upload_id, code=exc.code)
        raise refused(exc) from None
    checked = state.model_copy(update={"content_type": sniffed})
    await deps.spool.uploads.save(checked)
    return checked


async def receive(
    deps: GatewayDeps,
    state: UploadState,
    offset: int,
    body: AsyncIterator[bytes],
    checksum: tuple[str, bytes] | None,
) -> tuple[int, UploadState]:
    """Take one PATCH body starting at ``offset``; the new offset and state.

    Raises:
        ApiError: 413 past ``Upload-Length``; 460 ``checksum_mismatch``; the policy's refusals
            (upload removed); 408 ``request_timeout``; 400 ``incomplete_body`` (client gone).
    """
    store = deps.spool.uploads
    remaining = state.length - offset
    needs_check = state.content_type is None
    head_needed = min(HEAD_BYTES, state.length)
    head = await read_head(store, state.upload_id, head_needed) if needs_check and offset else b""
    hasher = hashlib.new(checksum[0]) if checksum else None
    writer: SpoolWriter | None = None
    pending = bytearray()
    received = 0
    try:
        async for piece in body:
            if not piece:
                continue
            received += len(piece)
            metrics.TUS_RECEIVED_BYTES.inc(len(piece))
            if received > remaining:
                raise ApiError(
                    413, "too_large", f"the chunk goes past Upload-Length ({state.length} bytes)"
                )
            if hasher is not None:
                hasher.update(piece)
            if writer is not None:
                await writer.write(piece)
                continue
            pending += piece
            if needs_check and len(head) + len(pending) >= head_needed:
                state = await check_type(deps, state, (head + pending)[:head_needed])
                needs_check = False
            if not needs_check:
                writer = await store.open_chunk(state.upload_id, offset)
                await writer.write(bytes(pending))
                pending.clear()
        if received == 0:
            return offset, state
        if checksum is not None and hasher is not None and hasher.digest() != checksum[1]:
            raise ApiError(
                460,
                "checksum_mismatch",
                f"the chunk's {checksum[0]} is not the Upload-Checksum sent; it was not kept",
            )
        if writer is None:  # the head is not whole yet: keep these bytes, check later
            writer = await store.open_chunk(state.upload_id, offset)
            await writer.write(bytes(pending))
        await writer.commit()
    except (ClientDisconnect, BodyTimeout) as exc:
        kept = 0
        if checksum is None and received:  # tus 1.0: keep a partial body's bytes
            if writer is None:
                writer = await store.open_chunk(state.upload_id, offset)
                await writer.write(bytes(pending))
            await writer.commit()
            kept = received
        log.info("gateway.tus_chunk_cut", upload_id=state.upload_id, received=received, kept=kept)
        if isinstance(exc, BodyTimeout):
            raise ApiError(408, "request_timeout", exc.detail) from None
        raise ApiError(400, "incomplete_body", "the client went away mid-chunk") from None
    finally:
        if writer is not None:
            await writer.__aexit__(None, None, None)  # aborts unless committed
    return offset + received, state


async def complete(deps: GatewayDeps, state: UploadState) -> UploadState:
    """Spool the whole file, announce ``file.received``, record the upload complete, remove
    its chunks; the completed state (its ``sha256`` and ``version_number`` set).

    A new version of a recorded file (``state.file_id``) first reserves its number
    (:class:`~shared.adapters.versions.VersionNumbers`, keyed by the upload's ``event_id``, so
    a completion retried after a crash gets the same number) and is spooled as
    ``{file_id}.v{n}``, as ``POST /v1/files/{id}/versions`` does.

    Raises:
        ApiError: 422 when the event cannot describe the file; 503/507 from
            :func:`~services.gateway.publish.announce` (the chunks stay: a retry completes).
        SpoolFull, StorageUnavailable: the spool cannot take the file (507, 503).
        DatabaseUnavailable: a version's number could not be reserved (503; the chunks stay).
    """
    fields = parse_metadata(state.metadata)
    store, upload_id = deps.spool.uploads, state.upload_id
    file_id, event_id = state.target_file_id, uuid.UUID(state.event_id)
    version_number = 1
    if state.file_id is not None:  # a new version: its number, the same on a retry
        version_number = await VersionNumbers(deps.pool).reserve(file_id, state.owner, event_id)
    name = spool_name(file_id, version_number)
    async with await deps.spool.open_writer(name, state.length) as writer:
        async for piece in store.iter_bytes(upload_id):
            await writer.write(piece)
        if writer.size_bytes != state.length:
            raise ApiError(
                409, "offset_mismatch", "the upload's chunks changed while it was completed"
            )
        await writer.commit()
    source = deps.spool.reference(name)
    try:
        event = FileReceived.new(
            event_id=event_id,
            file_id=file_id,
            version_number=version_number,
            owner=state.owner,
            source=source,
            size_bytes=writer.size_bytes,
            sha256=writer.sha256,
            content_type=state.content_type,
            original_name=clean_name(fields["filename"]),
            kind=parse_kind(fields["kind"].encode()) if "kind" in fields else None,
            metadata=parse_metadata_json(fields.get("metadata", "").encode()),
        )
    except ValidationError as exc:
        await remove_spooled(deps, source)
        await store.delete(upload_id)
        raise ApiError(422, "invalid_request", f"cannot describe the file: {exc}") from None
    confirmed = await announce(deps, event)
    done = state.model_copy(update={"sha256": writer.sha256, "version_number": version_number})
    await store.save(done)
    await store.delete_chunks(upload_id)
    metrics.UPLOADS.labels("accepted").inc()
    metrics.UPLOAD_BYTES.inc(writer.size_bytes)
    log.info(
        "gateway.file_received",
        via="tus",
        file_id=str(file_id),
        version_number=version_number,
        event_id=state.event_id,
        size_bytes=writer.size_bytes,
        content_type=state.content_type,
        outbox=not confirmed,
    )
    return done
