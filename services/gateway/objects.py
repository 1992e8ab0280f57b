"""``GET /v1/objects/{key}``: the local storage backend's signed download URLs, served.

With ``SLUICE_STORAGE_BACKEND=local`` the URLs of ``GET /v1/files/{id}`` (``urls.original``,
each thumbnail's ``url``) point here instead of at S3: no API key, a signature and an expiry
instead (``shared.adapters.signed_urls``: HMAC-SHA256, checked in constant time). A forged or
altered URL, or one past its ``expires``, is answered 403 ``forbidden`` with the reason; a key
that is not there 404 ``not_found``. The body is streamed with the object's ``Content-Type``
(or the signed ``type``) and ``Content-Length``, ``nosniff`` and a ``sandbox`` CSP, as
originals are served (``services.gateway.download``), and a byte ``Range`` as there (206, 416;
the ``ETag`` is the object's stored SHA-256, for ``If-Range``), and ``HEAD`` (no body), as S3
serves its presigned URLs.
With the S3 backend the route answers 404: S3 serves its own presigned URLs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from services.gateway.deps import GatewayDeps, get_deps
from services.gateway.download import Download, open_body
from services.gateway.errors import ApiError
from shared.adapters.local_keys import is_safe_key
from shared.adapters.local_storage import LocalObjectStorage
from shared.errors import SourceMissing

router = APIRouter(tags=["objects"])
Deps = Annotated[GatewayDeps, Depends(get_deps)]


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "no such object")


async def _nothing() -> AsyncIterator[bytes]:
    """The body of a HEAD: none."""
    return
    yield


async def _no_close() -> None:
    return None


@router.head("/v1/objects/{key:path}", include_in_schema=False)
@router.get(
    "/v1/objects/{key:path}",
    summary="An object of the local storage backend, through a signed URL",
    responses={
        206: {"description": "The Range asked."},
        403: {"description": "Signature does not match, or the URL has expired."},
        404: {"description": "No such object (or the S3 backend is in use)."},
        416: {"description": "No byte of the Range is in the object."},
        503: {"description": "The storage directory is unreachable."},
    },
)
async def get_object(
    key: str,
    deps: Deps,
    download: Download,
    expires: Annotated[int, Query(description="Expiry, Unix seconds.")],
    signature: Annotated[str, Query(max_length=128, description="HMAC-SHA256, hex.")],
    name: Annotated[str | None, Query(description="Download name, percent-encoded.")] = None,
    content_type: Annotated[
        str | None, Query(alias="type", description="Content-Type to answer with.")
    ] = None,
) -> StreamingResponse:
    """Stream the object ``key`` if the URL's signature holds and it has not expired.

    Raises:
        ApiError: 403 ``forbidden`` (forged or expired, the message says which), 404
            ``not_found``, 416 (a Range past the end); StorageUnavailable is answered 503
            ``storage_unavailable``.
    """
    storage = deps.storage
    if not isinstance(storage, LocalObjectStorage):
        raise _not_found()
    problem = storage.signer.problem(
        key, expires, signature, download_name=name, content_type=content_type
    )
    if problem is not None:
        raise ApiError(403, "forbidden", f"download URL refused: {problem}")
    if not is_safe_key(key):
        raise _not_found()
    head = await storage.head(key)
    if head is None:
        raise _not_found()
    etag = f'"{head.checksum_sha256}"' if head.checksum_sha256 else ""
    chosen = download.resolve(head.size_bytes, etag) if etag else None
    close: Callable[[], Awaitable[None]] = _no_close
    if download.head_only:
        info, body = head, _nothing()
    else:
        try:
            info, body, close = await open_body(storage, key, deps.spool.chunk_bytes, chosen)
        except SourceMissing:
            raise _not_found() from None

    headers = {
        "Accept-Ranges": "bytes" if etag else "none",
        "Content-Length": str(info.size_bytes),
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
    }
    if etag:
        headers["ETag"] = etag
    if chosen is not None:
        first, last = chosen
        headers["Content-Range"] = f"bytes {first}-{last}/{info.size_bytes}"
        headers["Content-Length"] = str(last - first + 1)
    if name is not None:
        # ``name`` is signed as the URL carries it, already percent-encoded (RFC 5987)
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{name}"
    return StreamingResponse(
        body,
        status_code=200 if chosen is None else 206,
        media_type=content_type or info.content_type or "application/octet-stream",
        headers=headers,
        background=BackgroundTask(close),
    )
