"""Reading a stored original back: what the thumbnail stage and the transforms (pdftext, ocr,
video) do first with a ``file.stored`` event.

The bytes are checked against the event's SHA-256 before any decoder sees them, so a stage never
derives artefacts from an object that is not the one the file's owner uploaded (the end-to-end
checksum of the brief: what the gateway hashed is what every stage reads).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from shared.errors import ChecksumMismatch
from shared.events import FileStored
from shared.ports import ObjectStore

#: Chunk size of :func:`download_original`, bytes: one worker-thread hop (write and hash) each.
DOWNLOAD_CHUNK_BYTES = 1024 * 1024


async def read_original(storage: ObjectStore, event: FileStored) -> bytes:
    """The whole object ``event`` names (``bucket``/``key``), hashed off the event loop.

    Raises:
        ChecksumMismatch: its SHA-256 is not the event's (dead-lettered: a fault to look at).
        SourceMissing: no such object. StorageUnavailable: the store is down (retried).
    """
    data = await storage.get_bytes(event.key, bucket=event.bucket)
    actual = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    if actual != event.sha256:
        raise _mismatch(event, actual, len(data))
    return data


def _mismatch(event: FileStored, actual: str, size_bytes: int) -> ChecksumMismatch:
    """The error for an object read back whose SHA-256 (``actual``) or size is not the
    event's."""
    return ChecksumMismatch(
        "stored object does not match the event's SHA-256",
        bucket=event.bucket,
        key=event.key,
        expected=event.sha256,
        actual=actual,
        size_bytes=size_bytes,
    )


async def download_original(
    storage: ObjectStore,
    event: FileStored,
    path: Path,
    chunk_bytes: int = DOWNLOAD_CHUNK_BYTES,
) -> None:
    """Stream the object ``event`` names into the new file ``path``, hashing it on the way:
    :func:`read_original` for a tool that reads a file (ffmpeg), holding one chunk in memory
    rather than the whole original.

    The object is ``event.key`` in ``storage``'s own bucket: the caller has checked that the
    event names that bucket (``shared.claims.check_stored_object``). Each chunk is written and
    hashed in a worker thread.

    Raises:
        ChecksumMismatch: the bytes' SHA-256 (or size) is not the event's; ``path`` is removed.
        SourceMissing: no such object. StorageUnavailable: the store is down (retried); a
            partial ``path`` is removed.
    """
    digest = hashlib.sha256()
    size = 0
    file = await asyncio.to_thread(path.open, "xb")

    def write(chunk: bytes) -> None:
        file.write(chunk)
        digest.update(chunk)

    try:
        try:
            async with storage.open_stream(event.key, chunk_bytes) as (_, chunks):
                async for chunk in chunks:
                    await asyncio.to_thread(write, chunk)
                    size += len(chunk)
        finally:
            await asyncio.to_thread(file.close)
        actual = digest.hexdigest()
        if actual != event.sha256 or size != event.size_bytes:
            raise _mismatch(event, actual, size)
    except BaseException:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
