"""The scan stage's rescans: ``file.rescan_requested`` → ``file.rescanned`` or, when the stored
bytes are now found infected, the objects moved to the quarantine prefix and
``file.quarantined`` (seed 000: a scan that keeps protecting stored files as signatures
change; docs/security.md § Rescans).

The original is read from the bucket and checked against the version's SHA-256 before clamd
sees it, so the verdict is about the bytes that are served. A file found infected (or not
scannable whole any more) is never deleted: the original, each thumbnail and every other
object made from it (poster frames, HLS files, extracted text, cached renditions:
:func:`derived_keys`) are copied to ``_quarantine/<key>`` (a server-side ``CopyObject`` on S3,
a checked write on the local backend), each copy read back and its SHA-256 compared, and only
then is the served key deleted: a presigned URL handed out before reaches none of them.

Idempotent (RabbitMQ: at-least-once delivery): a redelivery after some objects moved finds the
original gone and its quarantined copy there, reads the signature from the copy's metadata,
moves what is left and emits the same ``file.quarantined``. An original that is gone with no
quarantined copy is :class:`~shared.errors.SourceMissing`, dead-lettered: there is nothing to
scan (``sluice reconcile`` reports such losses).
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote, unquote

import structlog

from shared.adapters.encryption import sse_arguments
from shared.adapters.storage import S3ObjectStorage
from shared.errors import ChecksumMismatch, SourceMissing
from shared.events import BaseEvent, FileQuarantined, FileRescanned, FileRescanRequested
from shared.naming import QUARANTINE_PREFIX, quarantine_key
from shared.ports import ObjectStore, Scanner

log = structlog.get_logger("sluice.scan")

#: User metadata of a quarantined copy naming what was found (URL-quoted, ASCII).
SIGNATURE_METADATA = "sluice-signature"


async def rescan(
    event: FileRescanRequested, storage: ObjectStore, scanner: Scanner
) -> list[BaseEvent]:
    """Scan the stored original of ``event`` again; return ``file.rescanned`` (clean) or, once
    its objects are in quarantine, ``file.quarantined``.

    Raises:
        SourceMissing: the original is gone and not in quarantine.
        ChecksumMismatch: the stored bytes are not the version's SHA-256 (dead-lettered: a
            damaged object is ``sluice reconcile --deep``'s to report), or a quarantined copy
            did not read back whole (removed again; retried by a replay).
        ScannerUnavailable: clamd gave no verdict (retried). StorageUnavailable: S3 down.
    """
    try:
        data = await storage.get_bytes(event.key)
    except SourceMissing:
        moved = await storage.head(quarantine_key(event.key))
        if moved is None:
            raise
        signature = unquote(moved.metadata.get(SIGNATURE_METADATA, "")) or "unknown"
        log.info("rescan redelivered after the move began; finishing it", key=event.key)
        return [await _quarantine(event, storage, scanner, signature, None)]
    actual = hashlib.sha256(data).hexdigest()
    if actual != event.sha256:
        raise ChecksumMismatch(
            "stored original does not match the version's SHA-256; not rescanned",
            key=event.key,
            expected=event.sha256,
            actual=actual,
        )
    verdict = await scanner.scan(data)
    if verdict.clean:
        engine, database = await scanner.version()
        return [event.follow(FileRescanned, scanner=engine, signature_version=database)]
    signature = (verdict.signature or "unknown")[:255]
    log.warning("rescan found a stored file infected", signature=signature, key=event.key)
    return [await _quarantine(event, storage, scanner, signature, data)]


async def _quarantine(
    event: FileRescanRequested,
    storage: ObjectStore,
    scanner: Scanner,
    signature: str,
    original: bytes | None,
) -> FileQuarantined:
    keys = [event.key, *event.thumbnail_keys]
    keys += [key for key in await derived_keys(storage, event.key) if key not in keys]
    for key in keys:
        await move_to_quarantine(storage, key, signature, original if key == event.key else None)
    engine, database = await scanner.version()
    return event.follow(
        FileQuarantined,
        signature=signature,
        scanner=engine,
        signature_version=database,
        bucket=event.bucket,
        quarantine_keys=[quarantine_key(key) for key in keys],
    )


async def derived_keys(storage: ObjectStore, key: str) -> list[str]:
    """Every object made from the original ``key``, sorted: its poster frames, HLS files,
    extracted text and cached renditions, all named ``{key}.…`` (``shared.naming``), whether
    still served or already moved to ``_quarantine/`` by an earlier attempt (so a redelivery
    names the same objects). Thumbnails are among them.

    Raises:
        StorageUnavailable: the store is down.
    """
    prefix = key + "."
    found = {item.key async for item in storage.list_objects(prefix)}
    found |= {
        item.key.removeprefix(QUARANTINE_PREFIX)
        async for item in storage.list_objects(quarantine_key(prefix))
    }
    return sorted(found)


async def move_to_quarantine(
    storage: ObjectStore, key: str, signature: str, data: bytes | None = None
) -> bool:
    """Move ``key`` to :func:`~shared.naming.quarantine_key`: copy, read the copy back and
    compare its SHA-256 with the source's, then delete ``key``. ``data`` is the source's
    bytes when already read. ``True`` if it moved now, ``False`` if it was already moved or
    there is nothing there (a thumbnail never made).

    Raises:
        ChecksumMismatch: the copy is not the source's bytes (the copy is deleted).
        StorageUnavailable: S3 down.
    """
    target = quarantine_key(key)
    info = await storage.head(key)
    if info is None:
        return False
    if data is None:
        data = await storage.get_bytes(key)
    expected = hashlib.sha256(data).hexdigest()
    metadata = {**info.metadata, SIGNATURE_METADATA: quote(signature, safe="")}
    content_type = info.content_type or "application/octet-stream"
    if isinstance(storage, S3ObjectStorage):
        await storage.call(
            "CopyObject",
            lambda: storage.client.copy_object(
                Bucket=storage.bucket,
                Key=target,
                CopySource={"Bucket": storage.bucket, "Key": key},
                MetadataDirective="REPLACE",
                ContentType=content_type,
                Metadata=metadata,
                **sse_arguments(storage.settings),
            ),
            key=target,
        )
    else:
        await storage.put_bytes(
            target, data, sha256_hex=expected, content_type=content_type, metadata=metadata
        )
    copied = hashlib.sha256(await storage.get_bytes(target)).hexdigest()
    if copied != expected:
        await storage.delete(target)
        raise ChecksumMismatch(
            "quarantined copy does not read back as the original; removed",
            key=target,
            expected=expected,
            actual=copied,
        )
    await storage.delete(key)
    return True
