"""The fallback worker's consumer: a store dead letter (S3 unavailable) → Base64 in PostgreSQL.

The store stage dead-letters a ``file.scanned`` it could not store because S3 stayed
unavailable past its retries to the ``<prefix>.fallback`` queue (``shared.topology``). Here its
source bytes are read and checked against the event's SHA-256, written Base64-encoded into
``fallback_blobs`` (one row per version; a redelivery inserts nothing), and ``file.fallback``
is emitted so the commit stage records the version as ``fallback`` with the reason. Its
thumbnails wait: they are made from ``file.stored``, which :mod:`services.fallback.migrator`
emits once the bytes are in S3.

A file above ``SLUICE_FALLBACK_MAX_BYTES`` (default 10 MiB) is not kept: the handler returns a
:class:`~shared.stage.Refusal` carrying ``file.deferred`` and the route to the store stage's
dead-letter queue, where the message waits for ``sluice dlq replay`` once S3 is back. Seed 000:
"S3 indisponible → stockage temporaire Base64 → migration automatique".

Why the store stage gave up is read from the failure history the run loop passes in (the dead
letter's ``x-sluice-*`` headers, :class:`~shared.retry.FailureHistory`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from shared.adapters.row_cipher import RowCipher
from shared.errors import InvalidEvent
from shared.events import BaseEvent, FileDeferred, FileFallback, FileScanned
from shared.ports import FallbackStore, SourceReader
from shared.retry import FailureHistory
from shared.stage import Refusal
from shared.telemetry import tracing
from shared.topology import FALLBACK_DEAD_LETTERS, FALLBACK_FEED

#: The ``x-sluice-error-type`` of a file the fallback will not keep (over ``max_bytes``).
REFUSED = "FallbackRefused"


@dataclass(frozen=True)
class Deps:
    """What the consumer works through; ``max_bytes`` from ``FallbackSettings``."""

    sources: SourceReader
    repository: FallbackStore
    max_bytes: int
    cipher: RowCipher = field(default_factory=RowCipher.plain)  # SLUICE_FALLBACK_ENCRYPTION_*


def failure_reason(history: FailureHistory) -> str:
    """Why the store stage gave up, from the dead letter's failure ``history``, e.g.
    ``StorageUnavailable after 3 attempts: S3 unavailable: ...``, at most 2000 characters."""
    if history.stage not in (None, FALLBACK_FEED):  # a retry of the fallback's own
        return "S3 unavailable past the store stage's retries"
    error_type = "StorageUnavailable" if history.error_type is None else history.error_type
    message = "S3 unavailable" if history.error_message is None else history.error_message
    after = f" after {history.attempts} attempts" if history.attempts else ""
    return f"{error_type}{after}: {message}"[:2000]


async def handle(
    event: BaseEvent, history: FailureHistory, deps: Deps
) -> list[BaseEvent] | Refusal:
    """Keep ``event``'s original in PostgreSQL; return its ``file.fallback`` (whose reason is
    :func:`failure_reason` of ``history``).

    A file bigger than ``max_bytes`` is not kept: the answer is a :class:`Refusal` with its
    ``file.deferred`` and the route to the store dead-letter queue (``FALLBACK_DEAD_LETTERS``),
    reason :data:`REFUSED`.

    Raises:
        InvalidEvent: not a ``file.scanned`` event.
        ChecksumMismatch: the source bytes differ from the event's size or SHA-256.
        SourceMissing / InvalidSource: the source is gone or not allowed.
        StorageUnavailable: an ``s3://`` source while S3 is down (retried, then dead-lettered).
        DatabaseUnavailable: PostgreSQL down (retried).
    """
    if not isinstance(event, FileScanned):
        raise InvalidEvent(f"the fallback takes file.scanned events, not {event.type}")
    reason = failure_reason(history)
    if event.size_bytes > deps.max_bytes:
        why = (
            f"{event.size_bytes} bytes is over the fallback's {deps.max_bytes}-byte cap; "
            "replay the store dead-letter queue once S3 is back"
        )
        return Refusal(
            reason=REFUSED,
            detail=f"{why} (file_id={event.file_id})",
            route=FALLBACK_DEAD_LETTERS,
            events=(event.follow(FileDeferred, reason=f"{why} ({reason})"),),
        )
    data = await deps.sources.read(
        event.source, expected_sha256=event.sha256, expected_size=event.size_bytes
    )
    encoded = await asyncio.to_thread(
        lambda: deps.cipher.seal(
            data, file_id=event.file_id, version_number=event.version_number, sha256=event.sha256
        )
    )
    await deps.repository.keep(event, encoded, reason, tracing.inject({}))
    return [event.follow(FileFallback, reason=reason)]
