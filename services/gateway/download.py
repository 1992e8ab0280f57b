"""Streaming an original out of S3 to the client, chunk by chunk.

The object is opened (``GetObject``) before the answer starts, so a missing object is still a
clean 404 (seed 004: a missing object on read → 404 and a warning; marking the version
``corrupted`` belongs to reconciliation) and S3 being down a clean 503.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import structlog
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from services.gateway.errors import ApiError
from shared.errors import SourceMissing
from shared.naming import sanitise_name
from shared.storage import S3ObjectStorage

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


async def open_original(storage: S3ObjectStorage, row: Any, chunk_bytes: int) -> StreamingResponse:
    """A streaming answer with the original object of ``row`` (a ``files`` ⋈ version row).

    Headers: ``Content-Type`` (sniffed at upload), ``Content-Length``, ``Content-Disposition``,
    ``ETag`` and ``x-sluice-sha256`` (the SHA-256 recorded for the version).

    Raises:
        ApiError: 404 ``object_missing`` when S3 has no such object.
        StorageUnavailable: S3 down (answered 503).
    """
    stack = contextlib.AsyncExitStack()
    try:
        info, chunks = await stack.enter_async_context(
            storage.open_stream(row["object_key"], chunk_bytes)
        )
    except SourceMissing:
        await stack.aclose()
        log.warning(
            "gateway.object_missing",
            bucket=storage.bucket,
            key=row["object_key"],
            file_id=str(row["file_id"]),
        )
        raise ApiError(404, "object_missing", "the stored object is missing") from None
    except BaseException:
        await stack.aclose()
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await stack.aclose()

    headers = {
        "Content-Length": str(info.size_bytes),
        "Content-Disposition": content_disposition(row["original_name"]),
        "x-sluice-sha256": row["sha256"],
        "ETag": f'"{row["sha256"]}"',
        "Cache-Control": "private, no-store",
    }
    return StreamingResponse(
        body(),
        media_type=row["content_type"],
        headers=headers,
        background=BackgroundTask(stack.aclose),
    )
