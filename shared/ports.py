"""The ports the stage handlers work through: ``typing.Protocol``s, one real implementation each.

- :class:`SourceReader`: the verified bytes of an event's ``source``
  (:class:`shared.adapters.sources.SpoolOrS3SourceReader`);
- :class:`Scanner`: an antivirus verdict on bytes, and the engine's version
  (:class:`shared.adapters.scanner.ClamdScanner`);
- :class:`Spool`: removing a spooled file (:class:`shared.adapters.spool.LocalSpool`);
- :class:`ObjectStore`: head and put of one object in the bucket
  (:class:`shared.adapters.storage.S3ObjectStorage`).

Unit tests of handlers use small fakes of these; everything that crosses a process boundary is
tested against the real implementation.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Protocol

from shared.adapters.scanner import ScanVerdict
from shared.adapters.storage import ObjectInfo

__all__ = ["ObjectInfo", "ObjectStore", "ScanVerdict", "Scanner", "SourceReader", "Spool"]


class SourceReader(Protocol):
    """Reads the bytes a source reference (``spool://name``, ``s3://bucket/key``) points at."""

    async def read(self, source: str, *, expected_sha256: str, expected_size: int) -> bytes:
        """The whole source, checked against the event's size (bytes) and SHA-256 (hex).

        Raises:
            ChecksumMismatch: size or SHA-256 differ. SourceMissing: nothing there.
            InvalidSource: a reference that is not allowed. StorageUnavailable: S3 down.
        """
        ...

    def iter_chunks(self, source: str) -> AsyncIterator[bytes]:
        """The source as a stream of chunks, unverified (the consumer hashes it).

        Raises (on iteration): SourceMissing, InvalidSource, StorageUnavailable.
        """
        ...


class Scanner(Protocol):
    """An antivirus engine."""

    async def scan(self, data: bytes) -> ScanVerdict:
        """The verdict on ``data``.

        Raises:
            ScannerUnavailable: no verdict could be had (retryable).
        """
        ...

    async def version(self) -> tuple[str, str]:
        """``(engine, signature database version)``, e.g. ``("ClamAV 1.0.9", "27000/...")``.

        Raises:
            ScannerUnavailable: the engine cannot be asked.
        """
        ...


class FileStates(Protocol):
    """Read-only view of what the commit stage recorded about a file version."""

    async def status(self, file_id: uuid.UUID, version_number: int) -> str | None:
        """The version's recorded status (``received``, ``scanned``, ... ``available``,
        ``rejected``), or ``None`` when nothing is recorded yet.

        Raises:
            DatabaseUnavailable: PostgreSQL cannot be reached (retryable).
        """
        ...


class Spool(Protocol):
    """The spool directory where uploaded bytes wait until stored."""

    async def is_abandoned(self, source: str) -> bool:
        """Whether the gateway refused the upload behind ``source`` (answered 503)."""
        ...

    async def delete(self, source: str) -> bool:
        """Remove the spooled file of a ``spool://`` reference; ``False`` if already gone.

        Raises:
            InvalidSource: not a valid spool reference.
        """
        ...


class ObjectStore(Protocol):
    """The part of S3 object storage the store stage uses (one bucket)."""

    @property
    def bucket(self) -> str:
        """The bucket objects are written to."""
        ...

    async def head(self, key: str, *, bucket: str | None = None) -> ObjectInfo | None:
        """Size, type, stored SHA-256 and metadata of an object, or ``None`` if absent.

        Raises:
            StorageUnavailable: S3 down.
        """
        ...

    async def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        sha256_hex: str,
        content_type: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """One PUT that S3 verifies against ``sha256_hex``.

        Raises:
            ChecksumMismatch: S3 refused the bytes (BadDigest). StorageUnavailable: S3 down.
        """
        ...

    async def put_multipart(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        sha256_hex: str,
        content_type: str,
    ) -> None:
        """A multipart upload, SHA-256 per part, aborted unless the whole is ``sha256_hex``.

        Raises:
            ChecksumMismatch: the stream or a part does not match. StorageUnavailable: S3 down.
        """
        ...
