"""Streaming an original out of S3 to the client, chunk by chunk.

The object is opened (``GetObject``) before the answer starts, so a missing object is still a
clean 404 and S3 being down a clean 503. Seed 004: a missing object on read → 404, a warning,
and the version marked ``corrupted``: the gateway publishes ``file.corrupted`` (the commit stage
records it; its ``event_id`` is derived from the file, version and key, so repeated reads
record it once). While a version sits in the PostgreSQL fallback its bytes are served from
there with the same headers (:func:`fallback_original`).

Range requests (RFC 9110 § 14): ``Range: bytes=first-last``, ``first-`` or ``-suffix`` is served
as ``206 Partial Content`` with ``Content-Range``, from S3 by a ranged ``GetObject`` (a download
manager resumes, a media player seeks, without the whole object read); ``If-Range`` with the
``ETag`` keeps a resume from mixing two versions' bytes (another validator: the whole file). A
range with no byte in the file is ``416`` with ``Content-Range: bytes */size``. Several ranges,
or a header that is not a valid ``bytes`` range, get the whole file (200), which RFC 9110
allows. Every answer says ``Accept-Ranges: bytes``.

``HEAD`` (RFC 9110 § 9.3.2: the headers a ``GET`` would have, no body) is answered from a
``HeadObject`` (or the fallback row), so asking a file's size, type and SHA-256 reads none of
its bytes; a ``Range`` is resolved as for ``GET``.

An original is someone's upload, served from the gateway's own origin, so it is never rendered
there: it comes as an ``attachment``, with ``X-Content-Type-Options: nosniff`` (browsers keep
to the sniffed, policy-checked ``Content-Type``) and ``Content-Security-Policy: sandbox`` (should
a browser display it anyway, no script runs and it gets an opaque origin: no cookies, no
same-origin requests).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

import structlog
from fastapi import Depends, Header, Request
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from services.gateway.errors import ApiError
from shared.adapters.broker import Publisher
from shared.errors import BrokerUnavailable, SourceMissing
from shared.events import FileCorrupted, version_description
from shared.naming import sanitise_name
from shared.ports import ObjectInfo, ObjectStore

log = structlog.get_logger("sluice.gateway")

_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)  # units compare case-insensitively


@dataclass(frozen=True)
class DownloadRequest:
    """What a download request asks beyond its path: ``Range`` and ``If-Range`` (``None`` when
    not sent), and whether it is a ``HEAD`` (headers only)."""

    range: str | None = None
    if_range: str | None = None
    head_only: bool = False

    def resolve(self, size_bytes: int | None, etag: str) -> tuple[int, int] | None:
        """The bytes to serve, ``(first, last)`` inclusive, or ``None`` for the whole file.

        ``None`` when: no ``Range``; ``If-Range`` that is not ``etag`` (the file changed, or a
        date: there is no ``Last-Modified`` to compare); not one ``bytes`` range (several, or
        malformed, or ``last`` before ``first``: RFC 9110 lets a server ignore them); the size
        unknown. ``last`` past the end is cut to it (§ 14.1.2).

        Raises:
            ApiError: 416 ``range_not_satisfiable`` (with ``Content-Range: bytes */size``):
                the range starts past the end, or asks for a suffix of 0 bytes.
        """
        if self.range is None or size_bytes is None:
            return None
        if self.if_range is not None and self.if_range.strip() != etag:
            return None
        matched = _RANGE.fullmatch(self.range.strip().replace(" ", ""))
        if matched is None or not (matched[1] or matched[2]):
            return None
        if matched[1]:
            first = int(matched[1])
            last = min(int(matched[2]), size_bytes - 1) if matched[2] else size_bytes - 1
            if matched[2] and int(matched[2]) < first:
                return None
            if first < size_bytes:
                return first, last
        elif (suffix := int(matched[2])) > 0 and size_bytes > 0:
            return max(size_bytes - suffix, 0), size_bytes - 1
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"no byte of {self.range.strip()} is in the file ({size_bytes} bytes)",
            headers={"Content-Range": f"bytes */{size_bytes}"},
        )


def download_request(
    request: Request,
    byte_range: Annotated[
        str | None,
        Header(alias="Range", description="One byte range, RFC 9110: bytes=0-1023, bytes=-500."),
    ] = None,
    if_range: Annotated[
        str | None, Header(description="The ETag the range is of; another gets the whole file.")
    ] = None,
) -> DownloadRequest:
    """The ``Range``, ``If-Range`` and method of a download request (a FastAPI dependency)."""
    return DownloadRequest(byte_range, if_range, head_only=request.method == "HEAD")


#: A download route's parameter: its ``Range`` and ``If-Range`` headers, and whether it is a HEAD.
Download = Annotated[DownloadRequest, Depends(download_request)]


def quote_name(name: str) -> str:
    """``name`` percent-encoded as UTF-8 for ``filename*=UTF-8''...`` (RFC 5987, RFC 6266)."""
    return quote(name, safe="")


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback ``filename`` and the exact ``filename*`` (RFC 6266).

    >>> content_disposition("../résumé.pdf")
    'attachment; filename="r_sum_.pdf"; filename*=UTF-8\\'\\'..%2Fr%C3%A9sum%C3%A9.pdf'
    """
    fallback = sanitise_name(name).encode("ascii", "replace").decode().replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote_name(name)}"


def original_headers(
    row: Any, size_bytes: int, byte_range: tuple[int, int] | None = None
) -> dict[str, str]:
    """The headers of an original, wherever its bytes come from: ``Content-Length`` (and
    ``Content-Range`` for a ``byte_range`` of the ``size_bytes``), ``Accept-Ranges``,
    ``Content-Disposition``, ``ETag`` and ``x-sluice-sha256`` (the version's SHA-256), and the
    ones that keep a browser from running it (``nosniff``, a ``sandbox`` CSP)."""
    ranged = {}
    length = size_bytes
    if byte_range is not None:
        first, last = byte_range
        ranged["Content-Range"] = f"bytes {first}-{last}/{size_bytes}"
        length = last - first + 1
    return {
        **ranged,
        "Content-Length": str(length),
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(row["original_name"]),
        "x-sluice-sha256": row["sha256"],
        "ETag": f'"{row["sha256"]}"',
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
    }


def fallback_original(row: Any, data: bytes, download: DownloadRequest | None = None) -> Response:
    """The original of ``row`` from the PostgreSQL fallback (the requested range of it; no
    body for a HEAD), with the headers S3's would have.

    Raises:
        ApiError: 416 (:meth:`DownloadRequest.resolve`).
    """
    asked = download or DownloadRequest()
    chosen = asked.resolve(len(data), f'"{row["sha256"]}"')
    body = data if chosen is None else data[chosen[0] : chosen[1] + 1]
    if asked.head_only:
        body = b""
    return Response(
        body,
        status_code=200 if chosen is None else 206,
        media_type=row["content_type"],
        headers=original_headers(row, len(data), chosen),
    )


async def report_missing(publisher: Publisher, storage: ObjectStore, row: Any) -> None:
    """Log the missing object and publish the version's ``file.corrupted`` (seed 004).

    A failed publish is logged, not raised: the caller gets its 404 either way, and
    ``sluice reconcile --fix`` finds the loss later.
    """
    key = row["object_key"]
    log.warning(
        "gateway.object_missing",
        bucket=storage.bucket,
        key=key,
        file_id=str(row["file_id"]),
        version_number=row["current_version"],
    )
    event = FileCorrupted.about(
        version_description(row, row["file_id"], row["current_version"]),
        bucket=storage.bucket,
        key=key,
        detail="object missing on read (gateway)",
    )
    try:
        await publisher.publish(event)
    except BrokerUnavailable as exc:
        log.error("file.corrupted not published", error=str(exc), file_id=str(row["file_id"]))


async def open_original(
    storage: ObjectStore,
    row: Any,
    chunk_bytes: int,
    key: str | None = None,
    download: DownloadRequest | None = None,
) -> Response:
    """A streaming answer with the original object of ``row`` (a ``files`` ⋈ version row), at
    ``key`` (default: the version's ``object_key``), with :func:`original_headers`: the
    requested range of it (206), resolved against the version's recorded size, or all of it;
    for a HEAD, those headers from ``HeadObject`` and no body.

    Raises:
        ApiError: 416 (:meth:`DownloadRequest.resolve`).
        SourceMissing: S3 has no such object.
        StorageUnavailable: S3 down (answered 503).
    """
    asked = download or DownloadRequest()
    chosen = asked.resolve(row["size_bytes"], f'"{row["sha256"]}"')
    status = 200 if chosen is None else 206
    target = key or row["object_key"]
    if asked.head_only:
        found = await storage.head(target)
        if found is None:
            raise SourceMissing("no such object", bucket=storage.bucket, key=target)
        headers = original_headers(row, found.size_bytes, chosen)
        return Response(status_code=status, media_type=row["content_type"], headers=headers)
    info, body, close = await open_body(storage, target, chunk_bytes, chosen)
    return StreamingResponse(
        body,
        status_code=status,
        media_type=row["content_type"],
        headers=original_headers(row, info.size_bytes, chosen),
        background=BackgroundTask(close),
    )


async def open_body(
    storage: ObjectStore, key: str, chunk_bytes: int, byte_range: tuple[int, int] | None = None
) -> tuple[ObjectInfo, AsyncIterator[bytes], Callable[[], Awaitable[None]]]:
    """Open object ``key`` (bytes ``byte_range`` of it, when given) before an answer starts:
    its info, its body in ``chunk_bytes`` chunks, and the close to run once the answer is over
    (also run when the body ends; twice is harmless). Nothing stays open when it raises.

    Raises:
        SourceMissing: no such object. StorageUnavailable: storage down.
    """
    stack = contextlib.AsyncExitStack()
    try:
        info, chunks = await stack.enter_async_context(
            storage.open_stream(key, chunk_bytes, byte_range)
        )
    except BaseException:
        await stack.aclose()
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await stack.aclose()

    return info, body(), stack.aclose
