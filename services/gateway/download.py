"""Streaming an original out of S3 to the client, chunk by chunk.

The object is opened (``GetObject``) before the answer starts, so a missing object is still a
clean 404 and S3 being down a clean 503. Seed 004: a missing object on read → 404, a warning,
and the version marked ``corrupted``: the gateway publishes ``file.corrupted`` (the commit stage
records it; its ``event_id`` is derived from the file, version and key, so repeated reads
record it once). While a version sits in the PostgreSQL fallback its bytes are served from
there with the same headers (:func:`fallback_original`).

An original is someone's upload, served from the gateway's own origin, so it is never rendered
there: it comes as an ``attachment``, with ``X-Content-Type-Options: nosniff`` (browsers keep
to the sniffed, policy-checked ``Content-Type``) and ``Content-Security-Policy: sandbox`` (should
a browser display it anyway, no script runs and it gets an opaque origin: no cookies, no
same-origin requests).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import structlog
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from shared.adapters.broker import Publisher
from shared.errors import BrokerUnavailable
from shared.events import FileCorrupted, version_description
from shared.naming import sanitise_name
from shared.ports import ObjectInfo, ObjectStore

log = structlog.get_logger("sluice.gateway")


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


def original_headers(row: Any, size_bytes: int) -> dict[str, str]:
    """The headers of an original, wherever its bytes come from: ``Content-Length``,
    ``Content-Disposition``, ``ETag`` and ``x-sluice-sha256`` (the version's SHA-256), and the
    ones that keep a browser from running it (``nosniff``, a ``sandbox`` CSP)."""
    return {
        "Content-Length": str(size_bytes),
        "Content-Disposition": content_disposition(row["original_name"]),
        "x-sluice-sha256": row["sha256"],
        "ETag": f'"{row["sha256"]}"',
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
    }


def fallback_original(row: Any, data: bytes) -> Response:
    """The original of ``row`` from the PostgreSQL fallback, with the headers S3's would have."""
    return Response(data, media_type=row["content_type"], headers=original_headers(row, len(data)))


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
    storage: ObjectStore, row: Any, chunk_bytes: int, key: str | None = None
) -> StreamingResponse:
    """A streaming answer with the original object of ``row`` (a ``files`` ⋈ version row), at
    ``key`` (default: the version's ``object_key``), with :func:`original_headers`.

    Raises:
        SourceMissing: S3 has no such object.
        StorageUnavailable: S3 down (answered 503).
    """
    info, body, close = await open_body(storage, key or row["object_key"], chunk_bytes)
    return StreamingResponse(
        body,
        media_type=row["content_type"],
        headers=original_headers(row, info.size_bytes),
        background=BackgroundTask(close),
    )


async def open_body(
    storage: ObjectStore, key: str, chunk_bytes: int
) -> tuple[ObjectInfo, AsyncIterator[bytes], Callable[[], Awaitable[None]]]:
    """Open object ``key`` before an answer starts: its info, its body in ``chunk_bytes``
    chunks, and the close to run once the answer is over (also run when the body ends; twice is
    harmless). Nothing stays open when it raises.

    Raises:
        SourceMissing: no such object. StorageUnavailable: storage down.
    """
    stack = contextlib.AsyncExitStack()
    try:
        info, chunks = await stack.enter_async_context(storage.open_stream(key, chunk_bytes))
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
