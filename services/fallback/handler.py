"""The fallback worker's consumer: a store dead letter (S3 unavailable) → Base64 in PostgreSQL.

The store stage dead-letters a ``file.scanned`` it could not store because S3 stayed
unavailable past its retries to the ``<prefix>.fallback`` queue (``shared.topology``). Here its
source bytes are read and checked against the event's SHA-256, written Base64-encoded into
``fallback_blobs`` (one row per version; a redelivery inserts nothing), and ``file.fallback``
is emitted so the commit stage records the version as ``fallback`` with the reason. Its
thumbnails wait: they are made from ``file.stored``, which :mod:`services.fallback.migrator`
emits once the bytes are in S3.

A file above ``SLUICE_FALLBACK_MAX_BYTES`` (default 10 MiB) is not kept: ``file.deferred`` is
announced and the message goes to the store stage's dead-letter queue, for ``sluice dlq
replay`` once S3 is back. Seed 000: "S3 indisponible → stockage temporaire Base64 → migration
automatique".
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass

from services.fallback.repository import FallbackRepository
from shared.errors import FallbackRefused, InvalidEvent
from shared.events import BaseEvent, FileDeferred, FileFallback, FileScanned
from shared.ports import SourceReader
from shared.retry import HEADER_ATTEMPTS, HEADER_ERROR_MESSAGE, HEADER_ERROR_TYPE, HEADER_STAGE
from shared.runner import current_headers
from shared.telemetry import tracing


@dataclass(frozen=True)
class Deps:
    """What the consumer works through; ``max_bytes`` from ``FallbackSettings``."""

    sources: SourceReader
    repository: FallbackRepository
    max_bytes: int


def failure_reason() -> str:
    """Why the store stage gave up, from the dead letter's headers, e.g.
    ``StorageUnavailable after 3 attempts: S3 unavailable: ...``."""
    headers = current_headers.get()
    if headers.get(HEADER_STAGE, "store") != "store":  # a retry of the fallback's own
        return "S3 unavailable past the store stage's retries"
    error_type = headers.get(HEADER_ERROR_TYPE, "StorageUnavailable")
    attempts = headers.get(HEADER_ATTEMPTS)
    message = str(headers.get(HEADER_ERROR_MESSAGE, "S3 unavailable"))
    after = f" after {attempts} attempts" if attempts else ""
    return f"{error_type}{after}: {message}"[:2000]


async def handle(event: BaseEvent, deps: Deps) -> list[BaseEvent]:
    """Keep ``event``'s original in PostgreSQL; return its ``file.fallback``.

    Raises:
        InvalidEvent: not a ``file.scanned`` event.
        FallbackRefused: bigger than ``max_bytes`` (announces ``file.deferred``; dead-lettered
            to the store dead-letter queue).
        ChecksumMismatch: the source bytes differ from the event's size or SHA-256.
        SourceMissing / InvalidSource: the source is gone or not allowed.
        StorageUnavailable: an ``s3://`` source while S3 is down (retried, then dead-lettered).
        DatabaseUnavailable: PostgreSQL down (retried).
    """
    if not isinstance(event, FileScanned):
        raise InvalidEvent(f"the fallback takes file.scanned events, not {event.type}")
    reason = failure_reason()
    if event.size_bytes > deps.max_bytes:
        why = (
            f"{event.size_bytes} bytes is over the fallback's {deps.max_bytes}-byte cap; "
            "replay the store dead-letter queue once S3 is back"
        )
        raise FallbackRefused(
            why,
            announce=[event.follow(FileDeferred, reason=f"{why} ({reason})")],
            file_id=str(event.file_id),
        )
    data = await deps.sources.read(
        event.source, expected_sha256=event.sha256, expected_size=event.size_bytes
    )
    encoded = await asyncio.to_thread(lambda: base64.b64encode(data).decode("ascii"))
    await deps.repository.keep(event, encoded, reason, tracing.inject({}))
    return [event.follow(FileFallback, reason=reason)]
