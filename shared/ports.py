"""The ports the stage handlers work through: ``typing.Protocol``s, one real implementation each.

- :class:`SourceReader`: the verified bytes of an event's ``source``
  (:class:`shared.adapters.sources.SpoolOrS3SourceReader`);
- :class:`Scanner`: an antivirus verdict on bytes, and the engine's version
  (:class:`shared.adapters.scanner.ClamdScanner`);
- :class:`Spool`: where uploads wait until stored, with its :class:`SpoolWriter` (a directory,
  :class:`shared.adapters.spool.LocalSpool`, or an S3 quarantine bucket,
  :class:`shared.adapters.quarantine.QuarantineSpool`: two, chosen by ``SLUICE_SPOOL_BACKEND``);
- :class:`ObjectStore`: the objects of one bucket: probe, head, get, stream, put, delete, list,
  download URLs (:class:`shared.adapters.storage.S3ObjectStorage`, and
  :class:`shared.adapters.local_storage.LocalObjectStorage` on a directory; chosen by
  ``shared.adapters.object_storage.open_object_storage``);
- :class:`FileStateWriter`: the commit stage's transactions on file state, with their
  :class:`FileStateTransaction` (:class:`services.commit.repository.FileRepository`);
- :class:`FallbackStore`: files kept Base64 while S3 is down, and their migration back
  (:class:`services.fallback.repository.FallbackRepository`);
- :class:`PublishEvent`: publish one event, confirmed (``shared.adapters.broker.Publisher``).

The values these ports take and give (:class:`StageFields`, :class:`FileLock`,
:class:`FallbackRow`, :class:`FallbackSummary`) are defined here with them.

Unit tests of handlers use small fakes of these; everything that crosses a process boundary is
tested against the real implementation.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Collection, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

from shared.adapters.scanner import ScanVerdict
from shared.adapters.storage import ObjectInfo
from shared.events import (
    BaseEvent,
    FileDeleted,
    FileTextExtracted,
    FileTextFailed,
    FileVideoFailed,
    FileVideoProcessed,
)

__all__ = [
    "ClaimedFallbackRow",
    "FallbackRow",
    "FallbackStore",
    "FallbackSummary",
    "FileLock",
    "FileStateTransaction",
    "FileStateWriter",
    "ObjectInfo",
    "ObjectStore",
    "PublishEvent",
    "ScanVerdict",
    "Scanner",
    "SourceReader",
    "Spool",
    "SpoolWriter",
    "StageFields",
]


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


class DeletedFiles(Protocol):
    """Whether a file was deleted or erased while a stage still had its event in hand
    (docs/gdpr.md): a stage whose source is gone for such a file drops the message."""

    async def forgotten(self, event: BaseEvent) -> bool:
        """True when ``event``'s file is deleted, waits for its deletion (a gateway tombstone),
        or belongs to an owner erased since the file was received.

        Raises:
            DatabaseUnavailable: PostgreSQL cannot be reached (retryable).
        """
        ...


@dataclass(frozen=True)
class Upstream:
    """An upstream service allowed to publish ``file.received`` to the ingress exchange as the
    RabbitMQ user ``name``: for these ``owners`` only, with sources in these ``buckets`` only."""

    name: str
    owners: tuple[str, ...]
    buckets: tuple[str, ...]
    created_at: datetime | None = None


class UpstreamRegistry(Protocol):
    """The upstream services Sluice accepts files from (table ``upstreams``)."""

    async def lookup(self, name: str) -> Upstream | None:
        """The active upstream called ``name``, or ``None`` (never added, or removed).

        Raises:
            DatabaseUnavailable: PostgreSQL cannot be reached (retryable).
        """
        ...


class VersionNumbering(Protocol):
    """Numbers for new versions of recorded files (``shared.adapters.versions``)."""

    async def recorded_owner(self, file_id: uuid.UUID) -> str | None:
        """The file's recorded owner, ``None`` if it is not recorded."""
        ...

    async def recorded_version(self, event_id: uuid.UUID) -> int | None:
        """The version of the recorded event ``event_id``, ``None`` if not recorded."""
        ...

    async def reserve(self, file_id: uuid.UUID, owner: str, event_id: uuid.UUID) -> int:
        """The new version's number for the ``file.received`` ``event_id`` (idempotent)."""
        ...


class SpoolWriter(Protocol):
    """One upload being spooled, hashed as it is written (``async with``: leaving the block
    without :meth:`commit` aborts it, and nothing of it is ever readable)."""

    @property
    def size_bytes(self) -> int:
        """Bytes written so far."""
        ...

    @property
    def sha256(self) -> str:
        """SHA-256 of the file, lowercase hex, once :meth:`commit` has returned (a writer may
        hold and hash bytes in batches until then)."""
        ...

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk`` (an immutable ``bytes``: a writer may keep it until it writes).

        Raises:
            SpoolFull: no room (local disk full). StorageUnavailable: the quarantine bucket
                cannot be written (S3 down); the upload is aborted either way.
        """
        ...

    async def commit(self) -> None:
        """Make the file readable under its reference, whole (the rename; the quarantine's one
        ``PutObject`` or ``CompleteMultipartUpload``).

        Raises:
            SpoolFull, StorageUnavailable: as :meth:`write`; nothing is left readable.
        """
        ...

    async def abort(self) -> None:
        """Drop what was written (idempotent)."""
        ...

    async def __aenter__(self) -> SpoolWriter: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Spool(Protocol):
    """Where uploaded bytes wait, unscanned, until the store stage has stored them: a local
    directory (``spool://<name>``, :class:`shared.adapters.spool.LocalSpool`) or an S3
    quarantine bucket (``quarantine://<name>``,
    :class:`shared.adapters.quarantine.QuarantineSpool`); :class:`shared.adapters.spools.Spools`
    reads both and writes to the configured one.

    A reference names its backend, so any process reads a file whatever its own setting. Every
    method taking ``source`` raises :class:`~shared.errors.InvalidSource` for a reference that
    is not this spool's or a name that is not allowed.
    """

    @property
    def chunk_bytes(self) -> int:
        """Size of the chunks :meth:`iter_chunks` yields, bytes."""
        ...

    def reference(self, name: str) -> str:
        """The reference of spooled file ``name`` (``spool://<name>``, ``quarantine://<name>``)."""
        ...

    def owns(self, source: str) -> bool:
        """Whether ``source`` is a reference of this spool (by its scheme)."""
        ...

    async def check_room(self, expected_bytes: int = 0) -> int | None:
        """Free bytes if a file of ``expected_bytes`` fits, ``None`` when the spool has no such
        bound (an S3 bucket).

        Raises:
            SpoolFull: the local disk would go below its floor.
        """
        ...

    async def open_writer(self, name: str, expected_bytes: int = 0) -> SpoolWriter:
        """A writer for a new spooled file ``name`` of about ``expected_bytes`` (0: unknown).

        Raises:
            InvalidSource: bad name. SpoolFull: no room. StorageUnavailable: S3 down.
        """
        ...

    async def size(self, source: str) -> int:
        """The spooled file's size, bytes.

        Raises:
            SourceMissing: it is not there. StorageUnavailable: S3 down.
        """
        ...

    async def read_bytes(self, source: str) -> bytes:
        """The whole spooled file (unverified: the source reader checks it).

        Raises:
            SourceMissing: it is not there. StorageUnavailable: S3 down.
        """
        ...

    def iter_chunks(self, source: str) -> AsyncIterator[bytes]:
        """The spooled file in :attr:`chunk_bytes` chunks.

        Raises (on iteration): SourceMissing, StorageUnavailable.
        """
        ...

    async def delete(self, source: str) -> bool:
        """Remove the spooled file and any tombstone; ``False`` if the bytes were already gone.

        Raises:
            StorageUnavailable: S3 down.
        """
        ...

    async def abandon(self, source: str) -> None:
        """Remove the bytes of an upload the gateway refused (503), leaving a ``<name>.abandoned``
        tombstone so a scan stage that gets the event anyway rejects it as abandoned."""
        ...

    async def is_abandoned(self, source: str) -> bool:
        """Whether the gateway refused the upload behind ``source`` (its tombstone is there)."""
        ...

    async def promote(
        self,
        source: str,
        *,
        bucket: str,
        key: str,
        sha256_hex: str,
        size_bytes: int,
        content_type: str,
    ) -> bool:
        """Copy the spooled file server-side to ``bucket``/``key``, verified against
        ``sha256_hex`` and ``size_bytes``; ``False`` when this spool cannot (a local directory:
        the store stage uploads the bytes itself).

        Raises:
            SourceMissing: the spooled file is gone. ChecksumMismatch: the copy is not the
                event's bytes (removed again). StorageUnavailable: S3 down.
        """
        ...


class ObjectStore(Protocol):
    """Object storage of one bucket, as every caller uses it (seeds 001 and 003: upload,
    download, delete, exists, list behind one abstraction). The same errors for the same
    situations whatever the backend: ``StorageUnavailable`` when the store cannot be reached
    (retried; the store stage's fallback), ``SourceMissing`` or ``None`` for an object that is
    not there, ``ChecksumMismatch`` for bytes that do not hash to what was announced."""

    @property
    def bucket(self) -> str:
        """The bucket objects are written to."""
        ...

    async def ping(self) -> None:
        """The store answers and the bucket exists (readiness probes, circuit breakers).

        Raises:
            StorageUnavailable: the store cannot be reached. SourceMissing: no bucket (S3).
        """
        ...

    async def get_bytes(self, key: str, *, bucket: str | None = None) -> bytes:
        """The whole object.

        Raises:
            SourceMissing: no such object. StorageUnavailable: the store is down.
        """
        ...

    async def head(self, key: str, *, bucket: str | None = None) -> ObjectInfo | None:
        """Size, type, stored SHA-256 (base64) and metadata of an object, or ``None`` if absent.

        Raises:
            StorageUnavailable: the store is down.
        """
        ...

    def open_stream(
        self,
        key: str,
        chunk_bytes: int = 256 * 1024,
        byte_range: tuple[int, int] | None = None,
    ) -> AbstractAsyncContextManager[tuple[ObjectInfo, AsyncIterator[bytes]]]:
        """The object opened for streaming: its info (``size_bytes`` the whole object's) and an
        iterator of chunks; of bytes ``first`` to ``last`` (inclusive, 0-based) only when
        ``byte_range`` is ``(first, last)``, ``last`` within the object (HTTP Range semantics,
        RFC 9110 § 14.1.2).

        Raises:
            SourceMissing: no such object. StorageUnavailable: the store is down.
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
        """One write that the store verifies against ``sha256_hex``; nothing is written
        unless it matches.

        Raises:
            ChecksumMismatch: the bytes do not match (S3: BadDigest). StorageUnavailable: down.
        """
        ...

    async def put_new(self, key: str, data: bytes, *, sha256_hex: str, content_type: str) -> bool:
        """:meth:`put_bytes`, unless an object is at ``key`` already: then ``False``, and
        nothing is written (S3: ``PutObject`` with ``If-None-Match: *``, one request where a
        HEAD then a PUT take two).

        Raises:
            ChecksumMismatch: the bytes do not match. StorageUnavailable: down.
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
        """A streamed write, abandoned unless the whole is ``sha256_hex``; the whole SHA-256
        is also kept as user metadata ``sha256``.

        Raises:
            ChecksumMismatch: the stream or a part does not match. StorageUnavailable: down.
        """
        ...

    async def copy(
        self, source_key: str, key: str, *, sha256_hex: str, size_bytes: int, content_type: str
    ) -> None:
        """Copy the object ``source_key`` to ``key`` in the same bucket, without the bytes
        leaving the store, and prove the copy has ``size_bytes`` bytes and SHA-256
        ``sha256_hex``; a copy that does not is removed.

        Raises:
            SourceMissing: no object at ``source_key``. ChecksumMismatch: the copy differs.
            StorageUnavailable: the store is down.
        """
        ...

    async def delete(self, key: str) -> None:
        """Delete the object (no error if it is already gone).

        Raises:
            StorageUnavailable: the store is down.
        """
        ...

    def list_objects(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object under ``prefix`` (key, size, time), in bounded memory.

        Raises (on iteration):
            StorageUnavailable: the store is down.
        """
        ...

    async def presigned_get_url(
        self,
        key: str,
        ttl_s: int | None = None,
        *,
        download_name: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """A URL that serves ``key`` without an API key for ``ttl_s`` seconds: S3's presigned
        URL, or the gateway's signed ``/v1/objects/…`` path (local backend). With
        ``download_name`` (percent-encoded) an ``attachment`` of that name, with
        ``content_type``, both covered by the signature."""
        ...


@dataclass(frozen=True)
class StageFields:
    """The ``file_versions`` columns a stage's event sets; ``None`` leaves the column as it is.

    ``thumbnails`` is a list of ``{size_px, key, width, height, size_bytes}`` objects.
    """

    bucket: str | None = None
    object_key: str | None = None
    scanner: str | None = None
    signature_version: str | None = None
    thumbnails: list[dict[str, Any]] | None = None
    thumbnail_error: str | None = None
    rejection_reason: str | None = None
    signature: str | None = None


@dataclass(frozen=True)
class FileLock:
    """What a locked file looks like before the event is applied.

    ``version_status`` is ``None`` when the event's version has no row yet; ``owner`` is the
    file's recorded owner; ``file_status`` is the file's status (its current version's);
    ``has_attention`` whether it is marked as needing a person (``files.attention``), which
    only then may need clearing (``True`` when unknown).
    """

    current_version: int
    version_status: str | None
    owner: str
    file_status: str | None = None
    has_attention: bool = True


class FileStateTransaction(Protocol):
    """The writes of one event to a file's state, in one transaction."""

    async def record_event(self, event: BaseEvent, detail: str) -> bool:
        """Add ``event`` to the file's history; ``False`` if its ``event_id`` is already there.

        A new row gets the file's next number and its notice is sent when the transaction
        commits (:mod:`shared.history`)."""
        ...

    async def event_payload(self, event_id: uuid.UUID) -> dict[str, Any] | None:
        """The recorded JSON of event ``event_id``, or ``None`` if it was never recorded."""
        ...

    async def owner_of(self, file_id: uuid.UUID) -> str | None:
        """The file's recorded owner, or ``None`` if the file is not recorded."""
        ...

    async def lock_file(self, event: BaseEvent, initial_status: str) -> FileLock:
        """Create the file's row if missing (status ``initial_status``), then lock it until the
        transaction ends."""
        ...

    async def upsert_version(self, event: BaseEvent, status: str, fields: StageFields) -> None:
        """Write the row of the event's version: ``status`` and each non-``None`` field."""
        ...

    async def set_attention(self, event: BaseEvent, attention: dict[str, Any]) -> None:
        """Mark ``event``'s file, if it is of ``event``'s owner, as needing a person
        (``files.attention``; ``failed_at`` inside)."""
        ...

    async def clear_attention(self, event: BaseEvent) -> bool:
        """Clear the attention of ``event``'s file (of ``event``'s owner) if ``event`` shows it
        moves again (made after the failure, or the dead-lettered event itself); whether it was
        cleared."""
        ...

    async def update_file(self, event: BaseEvent, status: str, status_reason: str | None) -> None:
        """Make the event's version the file's current one, with ``status`` and its reason, if
        the file is of ``event``'s owner."""
        ...

    async def apply_edit(self, event: BaseEvent, fields: Collection[str]) -> bool:
        """Set ``fields`` of ``event``'s file to the event's values unless a newer edit was
        applied; whether it was applied."""

    async def deleted(self, event: BaseEvent) -> bool:
        """Whether ``event``'s file is deleted or waits for its deletion (its events are then
        dropped: docs/gdpr.md); holds the file's history lock until the transaction ends."""
        ...

    async def record_text(self, event: FileTextExtracted | FileTextFailed) -> None:
        """Write the ``file_texts`` row of ``event``'s version (what a text transform read, or
        why it could not), unless an event of that version made later is recorded there."""
        ...

    async def record_video(self, event: FileVideoProcessed | FileVideoFailed) -> None:
        """Write the ``file_videos`` row of ``event``'s version (the HLS rendition and poster
        the video stage made, or why it could not), unless an event of that version made later
        is recorded there."""
        ...

    async def delete_file(self, event: FileDeleted) -> bool:
        """Make the file ``deleted`` and remove its versions and history but the deletion
        (everything, for an erasure); ``False`` if it was already deleted.

        Raises:
            ForgedEvent: the file is recorded with another owner.
        """
        ...


class FileStateWriter(Protocol):
    """File state in PostgreSQL, written by the commit stage only."""

    def transaction(
        self, *, file_id: uuid.UUID, event_id: uuid.UUID
    ) -> AbstractAsyncContextManager[FileStateTransaction]:
        """One transaction: committed when the block ends normally, rolled back when it raises.

        Raises:
            DatabaseUnavailable: PostgreSQL refused or lost the connection (retryable).
        """
        ...


@dataclass(frozen=True)
class FallbackRow:
    """One version kept in PostgreSQL. ``event`` is the ``file.scanned`` (as a JSON object) to
    store from once S3 is back."""

    file_id: uuid.UUID
    version_number: int
    owner: str
    content_type: str
    size_bytes: int
    sha256: str
    data_base64: str
    event: dict[str, Any]
    reason: str
    created_at: datetime
    migration_attempts: int
    #: W3C trace context (``traceparent``, ``tracestate``) of the span that kept the row; empty
    #: for rows kept before it was recorded.
    trace_context: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FallbackSummary:
    """What sits in the fallback: ``versions`` rows, ``bytes`` of originals (decoded size),
    ``stored_bytes`` the table takes on disk, the ``oldest`` row's time."""

    versions: int
    bytes: int
    stored_bytes: int
    oldest: datetime | None


class ClaimedFallbackRow(Protocol):
    """A fallback row locked for its migration (:meth:`FallbackStore.claim`)."""

    @property
    def row(self) -> FallbackRow:
        """The locked row."""
        ...

    async def delete(self) -> None:
        """Delete the row when the claim commits: its migration is done."""
        ...


class FallbackStore(Protocol):
    """Files kept Base64 in PostgreSQL while S3 is down, one row per version.

    Every method raises ``DatabaseUnavailable`` when PostgreSQL refuses or loses the connection.
    """

    async def keep(
        self,
        event: BaseEvent,
        data_base64: str,
        reason: str,
        trace_context: Mapping[str, str] | None = None,
    ) -> bool:
        """Keep the row of ``event``'s version; False if it was already there."""
        ...

    async def oldest(self, limit: int) -> list[tuple[uuid.UUID, int]]:
        """``(file_id, version_number)`` of up to ``limit`` rows to migrate, oldest first."""
        ...

    def claim(
        self, file_id: uuid.UUID, version_number: int
    ) -> AbstractAsyncContextManager[ClaimedFallbackRow | None]:
        """Lock one row for its migration, or ``None`` if it is gone or another worker holds
        it; the claim commits when the block ends normally, and rolls back when it raises."""
        ...

    async def record_failure(self, file_id: uuid.UUID, version_number: int, error: str) -> None:
        """Count a failed migration of a row and keep its error."""
        ...

    async def summary(self) -> FallbackSummary:
        """Counts and sizes of what sits in the fallback."""
        ...

    async def corrupted_count(self) -> int:
        """File versions marked ``corrupted``."""
        ...


class PublishEvent(Protocol):
    """Publishes one event and returns once the broker confirmed it.

    Raises:
        BrokerUnavailable: the publish was not confirmed.
    """

    def __call__(self, event: BaseEvent) -> Awaitable[None]: ...
