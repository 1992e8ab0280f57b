"""The store stage: ``file.scanned`` → the original in S3 → ``file.stored``.

The key is ``shared.naming.object_key(owner, file_id, received_at, original_name)`` (seed 000's
``{uuid}-{timestamp}-{originalname}``, under the owner): deterministic, so a redelivered event
writes the same key and the stage is idempotent (RabbitMQ: at-least-once delivery).

A redelivered event must not write the object again, and succeeds even after the spool was
cleaned. A file of one PUT is sent as a conditional write (``If-None-Match: *``): S3 refuses it
when the key is taken, and only then a HEAD tells whether the object there is the event's (same
size and SHA-256: nothing to do) or other bytes, which are replaced; a source already gone is
answered by a HEAD too. One request per file where a HEAD then a PUT took two. A multipart
upload or a promotion asks the HEAD first, as before. S3 keeps the whole SHA-256 of a single
PUT as ``ChecksumSHA256``; for a multipart object that is a checksum of the part checksums, so
the whole SHA-256 is taken from the ``sha256`` metadata
:meth:`~shared.adapters.storage.S3ObjectStorage.put_multipart` writes.

Files below ``multipart_threshold_bytes`` are read whole (checked against size and SHA-256) and
sent in one PUT; bigger ones are streamed as a multipart upload that is aborted unless the
stream hashes to the event's SHA-256. Either way S3 verifies the checksum it is sent (AWS S3
docs, "Checking object integrity"), so the bucket never holds bytes the event did not announce.
The spooled bytes stay: the commit stage removes them once the file's final state is recorded.

A file in the S3 quarantine bucket (``quarantine://``, the S3 spool) is *promoted* instead: a
server-side copy to the key, checked against the event's SHA-256
(:meth:`~shared.adapters.quarantine.QuarantineSpool.promote`), its bytes never passing through
this process. Any S3 unavailability while promoting is
:class:`~shared.errors.QuarantineUnavailable`: the stage's circuit breaker waits for S3 rather
than sending the file to the Base64 fallback, since its bytes are in S3 already.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.adapters.quarantine import SCHEME as QUARANTINE
from shared.adapters.storage import b64_sha256
from shared.errors import ChecksumMismatch, QuarantineUnavailable, SourceMissing, StorageUnavailable
from shared.events import BaseEvent, FileStored
from shared.naming import object_key
from shared.ports import ObjectInfo, ObjectStore, SourceReader, Spool


@dataclass(frozen=True)
class Deps:
    """What the store stage works through; ``multipart_threshold_bytes`` from ``S3Settings``;
    ``spool`` promotes quarantined files (``None``: every source is read and uploaded)."""

    sources: SourceReader
    storage: ObjectStore
    multipart_threshold_bytes: int
    spool: Spool | None = None


def already_stored(info: ObjectInfo | None, *, size_bytes: int, sha256_hex: str) -> bool:
    """Whether ``info`` (a HEAD answer) is the object of ``size_bytes`` bytes and SHA-256
    ``sha256_hex``: S3's full-object ``ChecksumSHA256``, or for a multipart (COMPOSITE,
    ``<base64>-<parts>``) checksum the ``sha256`` metadata written with it."""
    if info is None or info.size_bytes != size_bytes or not info.checksum_sha256:
        return False
    if info.checksum_sha256 == b64_sha256(sha256_hex):
        return True
    composite = "-" in info.checksum_sha256
    return composite and info.metadata.get("sha256") == sha256_hex


async def handle(event: BaseEvent, deps: Deps) -> list[BaseEvent]:
    """Upload the event's source under its deterministic key; return its ``file.stored``.

    Raises:
        ChecksumMismatch: the source, or what S3 received, does not match the event's SHA-256.
        SourceMissing: the source is gone and the object is not stored yet.
        InvalidSource: a reference that is not allowed.
        StorageUnavailable: S3 down, timed out, 5xx (retried; after the last attempt the dead
            letter feeds the fallback worker).
        QuarantineUnavailable: the same for a ``quarantine://`` source (the stage's breaker
            waits for S3).
    """
    key = object_key(
        event.owner, event.file_id, event.received_at, event.original_name, event.version_number
    )
    try:
        await _store(event, key, deps)
    except StorageUnavailable as exc:
        if not event.source.startswith(QUARANTINE) or isinstance(exc, QuarantineUnavailable):
            raise
        raise QuarantineUnavailable(exc.message, **exc.context) from exc
    return [event.follow(FileStored, bucket=deps.storage.bucket, key=key)]


async def _store(event: BaseEvent, key: str, deps: Deps) -> None:
    """Put the event's bytes at ``key`` unless they are there already: promoted from the
    quarantine bucket, or read from the source and uploaded."""
    promotable = deps.spool is not None and event.source.startswith(QUARANTINE)
    if not promotable and event.size_bytes < deps.multipart_threshold_bytes:
        await _put_once(event, key, deps)
        return
    if await _stored(event, key, deps):
        return
    if (
        deps.spool is not None
        and deps.spool.owns(event.source)
        and await deps.spool.promote(
            event.source,
            bucket=deps.storage.bucket,
            key=key,
            sha256_hex=event.sha256,
            size_bytes=event.size_bytes,
            content_type=event.content_type,
        )
    ):
        return
    if event.size_bytes < deps.multipart_threshold_bytes:
        await _put_once(event, key, deps)
    else:
        await deps.storage.put_multipart(
            key,
            deps.sources.iter_chunks(event.source),
            sha256_hex=event.sha256,
            content_type=event.content_type,
        )


async def _stored(event: BaseEvent, key: str, deps: Deps) -> bool:
    """Whether the event's bytes are at ``key`` already (HEAD: :func:`already_stored`)."""
    existing = await deps.storage.head(key)
    return already_stored(existing, size_bytes=event.size_bytes, sha256_hex=event.sha256)


async def _put_once(event: BaseEvent, key: str, deps: Deps) -> None:
    """Read the source whole and write it at ``key`` unless the key is taken; then, or when the
    source is gone or no longer the event's bytes, the object there must be the event's (a
    redelivery), else other bytes are replaced and the source's error is raised."""
    try:
        data = await deps.sources.read(
            event.source, expected_sha256=event.sha256, expected_size=event.size_bytes
        )
    except (SourceMissing, ChecksumMismatch):
        if await _stored(event, key, deps):  # stored before: the source may be gone since
            return
        raise
    if await deps.storage.put_new(
        key, data, sha256_hex=event.sha256, content_type=event.content_type
    ):
        return
    if await _stored(event, key, deps):
        return
    await deps.storage.put_bytes(
        key, data, sha256_hex=event.sha256, content_type=event.content_type
    )
