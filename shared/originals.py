"""Reading a stored original back: what the thumbnail stage and the transforms (pdftext, ocr,
video) do first with a ``file.stored`` event.

The bytes are checked against the event's SHA-256 before any decoder sees them, so a stage never
derives artefacts from an object that is not the one the file's owner uploaded (the end-to-end
checksum of the brief: what the gateway hashed is what every stage reads).
"""

from __future__ import annotations

import asyncio
import hashlib

from shared.errors import ChecksumMismatch
from shared.events import FileStored
from shared.ports import ObjectStore


async def read_original(storage: ObjectStore, event: FileStored) -> bytes:
    """The whole object ``event`` names (``bucket``/``key``), hashed off the event loop.

    Raises:
        ChecksumMismatch: its SHA-256 is not the event's (dead-lettered: a fault to look at).
        SourceMissing: no such object. StorageUnavailable: the store is down (retried).
    """
    data = await storage.get_bytes(event.key, bucket=event.bucket)
    actual = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    if actual != event.sha256:
        raise ChecksumMismatch(
            "stored object does not match the event's SHA-256",
            bucket=event.bucket,
            key=event.key,
            expected=event.sha256,
            actual=actual,
        )
    return data
