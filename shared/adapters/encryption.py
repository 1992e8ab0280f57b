"""Server-side encryption of stored objects (``S3_SSE``, ``S3_SSE_KMS_KEY_ID``; seed 000:
AES-256 at rest).

S3 encrypts an object only when the request that writes it asks: ``PutObject``,
``CopyObject`` (a copy does not inherit its source's encryption) and
``CreateMultipartUpload`` all carry the arguments of :func:`sse_arguments`. A server may
ignore the header and store the bytes in clear, or refuse it with a 5xx that looks like an
outage (SeaweedFS 4.48 answers ``InternalError`` to ``aws:kms`` without a KMS), so
:func:`verify_encryption` writes a probe object the way every object is written and reads the
encryption back from a HEAD. docs/storage.md lists which servers honour what.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING, Any

import structlog

from shared.errors import ConfigError, StorageUnavailable

if TYPE_CHECKING:
    from shared.adapters.storage import S3ObjectStorage
    from shared.settings import S3Settings

log = structlog.get_logger("sluice.storage")

#: Where probe objects are written, one per check, deleted at once.
PROBE_PREFIX = ".sluice-probe/"


def sse_arguments(settings: S3Settings) -> dict[str, str]:
    """The boto arguments asking for ``settings``' encryption: ``{}`` (none),
    ``{"ServerSideEncryption": "AES256"}``, or ``aws:kms`` with ``SSEKMSKeyId`` when a key id
    is set. Spread into every PutObject, CopyObject and CreateMultipartUpload."""
    if not settings.sse:
        return {}
    arguments: dict[str, str] = {"ServerSideEncryption": settings.sse}
    if settings.sse == "aws:kms" and settings.sse_kms_key_id:
        arguments["SSEKMSKeyId"] = settings.sse_kms_key_id
    return arguments


def encryption_of(head: dict[str, Any]) -> str | None:
    """The encryption a HeadObject answer reports (``AES256``, ``aws:kms``) or ``None``."""
    value = head.get("ServerSideEncryption")
    return str(value) if value else None


async def verify_encryption(storage: S3ObjectStorage) -> str | None:
    """Check that the server honours ``S3_SSE``: PUT a 32-byte probe object under
    :data:`PROBE_PREFIX` as every object is written, HEAD it, delete it. Returns the encryption
    the HEAD reported (``None`` when ``S3_SSE`` is empty: nothing is written then).

    Raises:
        StorageUnavailable: S3 down (``HeadBucket`` fails): nothing can be told yet.
        ConfigError: S3 answers, but refused the encryption header (its error is named) or
            stored the probe without the encryption asked (``S3_SSE`` is named).
    """
    settings = storage.settings
    if not settings.sse:
        return None
    await storage.ping()
    key = f"{PROBE_PREFIX}sse-{uuid.uuid4().hex}"
    body = uuid.uuid4().bytes * 2
    try:
        await storage.put_bytes(
            key,
            body,
            sha256_hex=hashlib.sha256(body).hexdigest(),
            content_type="application/octet-stream",
        )
    except StorageUnavailable as exc:
        raise ConfigError(
            f"S3_SSE={settings.sse}: {settings.endpoint} answers HeadBucket but refused a "
            f"PutObject asking for it ({exc}); the server may not support this encryption "
            "(docs/storage.md)"
        ) from exc
    try:
        head = await storage.call(
            "HeadObject",
            lambda: storage.client.head_object(Bucket=storage.bucket, Key=key),
            key=key,
        )
    finally:
        await storage.delete(key)
    reported = encryption_of(head)
    if reported != settings.sse:
        raise ConfigError(
            f"S3_SSE={settings.sse}: {settings.endpoint} stored a probe object with "
            f"ServerSideEncryption={reported}; it ignores the header, objects would be stored "
            "unencrypted (docs/storage.md)"
        )
    return reported


async def check_encryption(storage: object) -> None:
    """The store stage's start-up check: :func:`verify_encryption` on an S3 store with
    ``S3_SSE`` set; nothing for the local backend. S3 down at start is logged and let be (the
    stage starts while S3 is down, seed 000's fallback covers it).

    Raises:
        ConfigError: the server answers and does not honour ``S3_SSE`` (the process stops).
    """
    from shared.adapters.storage import S3ObjectStorage

    if not isinstance(storage, S3ObjectStorage) or not storage.settings.sse:
        return
    try:
        reported = await verify_encryption(storage)
    except StorageUnavailable as exc:
        log.warning("storage.encryption_unchecked", error=str(exc), sse=storage.settings.sse)
        return
    log.info("storage.encryption_checked", sse=reported, endpoint=storage.settings.endpoint)
