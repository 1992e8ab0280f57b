"""``/v1/uploads/``: resumable uploads over tus 1.0 (https://tus.io/protocols/resumable-upload),
with the extensions creation, creation-with-upload, termination, expiration and checksum.

=======  =====================  ===========================================================
method   path                   answer
=======  =====================  ===========================================================
OPTIONS  /v1/uploads/[{id}]     204: ``Tus-Version``, ``Tus-Extension``, ``Tus-Max-Size``,
                                ``Tus-Checksum-Algorithm`` (no key needed)
POST     /v1/uploads/           201 + ``Location``, ``Upload-Expires`` (creation); with an
                                ``application/offset+octet-stream`` body, ``Upload-Offset``
                                too (creation-with-upload)
HEAD     /v1/uploads/{id}       200: ``Upload-Offset``, ``Upload-Length``, ``Upload-Metadata``,
                                ``Upload-Expires``; ``Sluice-File-Id`` and
                                ``Sluice-Version-Number`` once complete
PATCH    /v1/uploads/{id}       204 + the new ``Upload-Offset``; 409 on an offset mismatch or a
                                concurrent request, 460 on a checksum mismatch
DELETE   /v1/uploads/{id}       204 (termination); the upload is gone (404 after)
=======  =====================  ===========================================================

Every request but OPTIONS needs ``Tus-Resumable: 1.0.0`` (else 412) and an ``upload`` key, as
``/v1/files`` (:func:`services.gateway.auth.require_owner`); another owner's upload is 404, never
403. The upload's id is also the id of the file it becomes (``GET /v1/files/{id}``); with
``file_id`` in ``Upload-Metadata`` (a file of the caller's), the upload becomes that file's next
version instead, as ``POST /v1/files/{id}/versions`` (its number is reserved at completion).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from services.gateway.auth import Owner
from services.gateway.deps import GatewayDeps, get_deps
from services.gateway.errors import ApiError, refused
from services.gateway.fields import parse_kind
from services.gateway.fields import parse_metadata as parse_metadata_json
from services.gateway.repo import fetch_owner
from services.gateway.tus import headers as tus
from services.gateway.tus.transfer import complete, receive
from shared.adapters.resumable import UploadBusy, UploadState, contiguous_end
from shared.errors import PolicyRefusal
from shared.policy import clean_name, compact_json

BASE = "/v1/uploads"
router = APIRouter(tags=["tus resumable uploads"])
_ID = re.compile(r"^[0-9a-f]{32}$")
Deps = Annotated[GatewayDeps, Depends(get_deps)]


def require_version(request: Request) -> None:
    """``Tus-Resumable: 1.0.0`` (a FastAPI dependency, resolved before the key).

    Raises:
        ApiError: 412 ``unsupported_version``.
    """
    tus.check_version(request.headers.get("tus-resumable"))


Version = Annotated[None, Depends(require_version)]


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "no such upload")


async def owned(deps: GatewayDeps, upload_id: str, owner: str) -> UploadState:
    """The caller's upload ``upload_id``.

    Raises:
        ApiError: 404 ``not_found`` (no such upload, or another owner's); 410
            ``upload_expired`` past its ``Upload-Expires`` (tus expiration).
    """
    if not _ID.fullmatch(upload_id):
        raise _not_found()
    state = await deps.spool.uploads.load(upload_id)
    if state is None or state.owner != owner:
        raise _not_found()
    if state.expired():
        raise ApiError(410, "upload_expired", f"the upload expired at {state.expires_at}")
    return state


def _headers(state: UploadState, offset: int) -> dict[str, str]:
    out = {
        "Upload-Offset": str(offset),
        "Upload-Expires": tus.http_date(state.expires_at),
        "Cache-Control": "no-store",
    }
    if state.complete:
        out[tus.FILE_ID] = str(state.target_file_id)
        out[tus.VERSION_NUMBER] = str(state.version_number or 1)
    return out


@router.options(BASE, include_in_schema=False)
@router.options(BASE + "/", summary="tus discovery")
@router.options(BASE + "/{upload_id}", include_in_schema=False)
async def discovery(deps: Deps) -> Response:
    """What this server supports (tus 1.0 § OPTIONS): version, extensions, largest upload
    (the policy's largest limit, bytes), checksum algorithms."""
    return Response(
        status_code=204,
        headers={
            "Tus-Version": tus.VERSION,
            "Tus-Extension": ",".join(tus.EXTENSIONS),
            "Tus-Max-Size": str(deps.policy.hard_cap_bytes),
            "Tus-Checksum-Algorithm": ",".join(tus.CHECKSUM_ALGORITHMS),
        },
    )


def _check_creation(deps: GatewayDeps, length: int, fields: dict[str, str]) -> None:
    """What can be refused before any byte: the name, its type's limit, ``kind``,
    ``metadata`` (the rules of ``/v1/files``).

    Raises:
        ApiError: 400/413/415/422.
    """
    if "filename" not in fields:
        raise ApiError(422, "invalid_request", "Upload-Metadata needs a `filename`")
    try:
        name = clean_name(fields["filename"])
        if deps.policy.by_extension(name) is None:
            raise PolicyRefusal(
                "unsupported_type",
                f"file type of {name!r} is not accepted; accepted: "
                f"{', '.join(deps.policy.extensions)}",
            )
        limit = deps.policy.limit_bytes(name)
        if length > limit:
            raise PolicyRefusal(
                "too_large", f"Upload-Length is {length} bytes, over the limit of {limit} bytes"
            )
    except PolicyRefusal as exc:
        raise refused(exc) from None
    if "kind" in fields:
        parse_kind(fields["kind"].encode())
    metadata = parse_metadata_json(fields.get("metadata", "").encode())
    if len(compact_json(metadata)) > deps.policy.max_metadata_bytes:
        raise ApiError(
            413,
            "too_large",
            f"the `metadata` field is larger than {deps.policy.max_metadata_bytes} bytes",
        )


async def _version_of(deps: GatewayDeps, owner: str, file_id: str | None) -> str | None:
    """The file a new upload is a version of (``file_id`` of its ``Upload-Metadata``), once
    checked to be a recorded file of ``owner``'s; None for a new file.

    Raises:
        ApiError: 422 ``invalid_request`` (not a UUID); 404 ``not_found`` (no such file of the
            caller's, as ``POST /v1/files/{id}/versions``).
    """
    if file_id is None:
        return None
    try:
        parsed = uuid.UUID(file_id)
    except ValueError:
        raise ApiError(
            422, "invalid_request", "Upload-Metadata `file_id` is not a file id"
        ) from None
    if await fetch_owner(deps.pool, parsed) != owner:
        raise ApiError(404, "not_found", "no such file")
    return str(parsed)


@router.post(BASE, include_in_schema=False, status_code=201)
@router.post(BASE + "/", summary="Create a resumable upload (tus creation)", status_code=201)
async def create(request: Request, _: Version, owner: Owner, deps: Deps) -> Response:
    """Create an upload of ``Upload-Length`` bytes; with a body, take it as its first chunk.

    Raises:
        ApiError: 400 (no or bad ``Upload-Length``, ``Upload-Defer-Length``,
            ``Upload-Concat``, empty file), 404
            (``file_id`` names no file of the caller's), 413 (over the largest allowed size, or
            the type's), 415 (extension), 422 (no ``filename``, bad ``kind``/``metadata``/
            ``file_id``); a body's errors as PATCH.
    """
    if "upload-defer-length" in request.headers:
        raise ApiError(400, "invalid_request", "Upload-Defer-Length is not supported")
    if "upload-concat" in request.headers:
        # A partial upload taken as a whole one would become a file of a fragment.
        raise ApiError(
            400,
            "invalid_request",
            "Upload-Concat is not supported (no concatenation extension): send the file as "
            "one upload (tus-js-client: parallelUploads 1)",
        )
    length = tus.parse_length(request.headers.get("upload-length"), "Upload-Length")
    if length == 0:
        raise ApiError(400, "empty_file", "Upload-Length is 0: there is nothing to upload")
    if length > deps.policy.hard_cap_bytes:
        raise ApiError(
            413, "too_large", f"Upload-Length is over Tus-Max-Size ({deps.policy.hard_cap_bytes})"
        )
    raw = request.headers.get("upload-metadata", "")
    fields = tus.parse_metadata(raw)
    _check_creation(deps, length, fields)
    version_of = await _version_of(deps, owner, fields.get("file_id"))
    now = datetime.now(UTC).replace(microsecond=0)
    state = UploadState(
        upload_id=uuid.uuid4().hex,
        owner=owner,
        length=length,
        metadata=raw,
        created_at=now,
        expires_at=now + timedelta(seconds=deps.settings.tus.expiry_s),
        event_id=str(uuid.uuid4()),
        file_id=version_of,
    )
    store = deps.spool.uploads
    await store.save(state)
    location = f"{BASE}/{state.upload_id}"
    answer = {"Location": location, **_headers(state, 0)}
    if request.headers.get("content-type", "").split(";")[0].strip() != tus.OFFSET_STREAM:
        answer.pop("Upload-Offset")
        return Response(status_code=201, headers=answer)
    try:
        offset, state = await _take(request, deps, owner, state, 0)
    except ApiError as exc:
        if exc.status_code in (409, 460):
            exc.headers.setdefault("Location", location)
        raise
    return Response(status_code=201, headers={"Location": location, **_headers(state, offset)})


async def _take(
    request: Request, deps: GatewayDeps, owner: str, state: UploadState, offset: int
) -> tuple[int, UploadState]:
    """Receive one chunk under the owner's upload slot and the upload's lock; complete the
    upload when it is whole."""
    checksum = tus.parse_checksum(request.headers.get("upload-checksum"))
    store = deps.spool.uploads
    with deps.uploads.hold(owner):
        try:
            async with store.lock(state.upload_id):
                state = await store.load(state.upload_id) or state
                if state.complete:
                    if offset == state.length:
                        return offset, state
                    raise _mismatch(offset, state.length)
                current = contiguous_end(await store.chunks(state.upload_id))
                if offset != current:
                    raise _mismatch(offset, current)
                offset, state = await receive(deps, state, offset, request.stream(), checksum)
                if offset == state.length:
                    state = await complete(deps, state)
                return offset, state
        except UploadBusy:
            raise ApiError(
                409, "upload_busy", "another request on this upload is in progress"
            ) from None


def _mismatch(sent: int, actual: int) -> ApiError:
    return ApiError(
        409,
        "offset_mismatch",
        f"Upload-Offset is {sent} but the upload is at {actual}",
        headers={"Upload-Offset": str(actual)},
    )


@router.head(BASE + "/{upload_id}", summary="An upload's offset (tus HEAD)")
async def head(upload_id: str, _: Version, owner: Owner, deps: Deps) -> Response:
    """The upload's offset, length, metadata and expiry; ``Sluice-File-Id`` once complete.
    An upload whose bytes all came but whose completion did not finish (a crash, the outbox
    full) is completed here.

    Raises:
        ApiError: 404, 410 (:func:`owned`).
    """
    state = await owned(deps, upload_id, owner)
    store = deps.spool.uploads
    offset = state.length if state.complete else contiguous_end(await store.chunks(upload_id))
    if offset == state.length and not state.complete:
        try:
            async with store.lock(upload_id):
                state = await complete(deps, state)
        except UploadBusy:
            pass  # a PATCH is completing it
    answer = {"Upload-Length": str(state.length), **_headers(state, offset)}
    if state.metadata:
        answer["Upload-Metadata"] = state.metadata
    return Response(status_code=200, headers=answer)


@router.patch(BASE + "/{upload_id}", summary="Send the next chunk (tus PATCH)", status_code=204)
async def patch(request: Request, upload_id: str, _: Version, owner: Owner, deps: Deps) -> Response:
    """Append the body at ``Upload-Offset`` (optionally checked against ``Upload-Checksum``).

    Raises:
        ApiError: 415 (not ``application/offset+octet-stream``), 400 (bad headers), 404, 410,
            409 ``offset_mismatch`` / ``upload_busy``, 413, 415 (type refused), 460
            ``checksum_mismatch``, 429 ``too_many_uploads``.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != tus.OFFSET_STREAM:
        raise ApiError(415, "not_offset_stream", f"a PATCH body must be {tus.OFFSET_STREAM}")
    offset = tus.parse_length(request.headers.get("upload-offset"), "Upload-Offset")
    state = await owned(deps, upload_id, owner)
    offset, state = await _take(request, deps, owner, state, offset)
    return Response(status_code=204, headers=_headers(state, offset))


@router.delete(BASE + "/{upload_id}", summary="Terminate an upload (tus termination)")
async def terminate(upload_id: str, _: Version, owner: Owner, deps: Deps) -> Response:
    """Remove the upload and its bytes (a complete upload's file goes on: delete files with
    the files API).

    Raises:
        ApiError: 404, 410; 409 ``upload_busy`` while a PATCH runs.
    """
    await owned(deps, upload_id, owner)
    try:
        async with deps.spool.uploads.lock(upload_id):
            await deps.spool.uploads.delete(upload_id)
    except UploadBusy:
        raise ApiError(409, "upload_busy", "a request on this upload is in progress") from None
    return Response(status_code=204)
