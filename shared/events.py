"""The event contract: versioned, frozen values, one per stage outcome.

Every event carries the whole description of the file (owner, source reference, size, SHA-256,
content type, original name), so each consumer works from the event alone; bytes never travel
through RabbitMQ (the brief). ``event_id`` is the idempotency key. An event a stage emits in
answer to another has a deterministic id (UUIDv5 of the parent id and the new type), so a
redelivered message makes the same event again and downstream consumers recognise it.

JSON Schemas generated from these models live in ``docs/events/`` (``sluice events schemas``);
a test checks they are current.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    field_validator,
)

from shared.status import FileStatus
from shared.text import StorableText, has_unstorable, safe_text

SCHEMA_VERSION = 1

Sha256Hex = Annotated[
    str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the bytes, lowercase hex.")
]
Owner = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Owner of the file (the API key's owner); also the first S3 key segment.",
    ),
]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    schema_version: Literal[1] = Field(
        1, description="Version of this contract; consumers reject any other."
    )
    event_id: uuid.UUID = Field(description="Unique id of this event; the idempotency key.")
    causation_id: uuid.UUID | None = Field(
        None, description="event_id of the event this one answers; null for file.received."
    )
    occurred_at: AwareDatetime = Field(description="When the event was made, UTC.")
    file_id: uuid.UUID = Field(description="The file this event is about.")
    version_number: int = Field(1, ge=1, description="Version of the file, from 1.")
    owner: Owner
    received_at: AwareDatetime = Field(
        description="When the gateway (or upstream service) accepted the file, UTC."
    )
    source: str = Field(
        min_length=1,
        max_length=2048,
        description="Where the original bytes are: `spool://<name>`, `quarantine://<name>` "
        "(the S3 spool) or `s3://<bucket>/<key>`.",
    )
    size_bytes: int = Field(ge=0, le=5 * 1024**4, description="Size of the original, bytes.")
    sha256: Sha256Hex
    content_type: str = Field(
        min_length=3,
        max_length=255,
        description="Media type sniffed from the bytes; in an upstream service's file.received, "
        "its claim, which the scan stage replaces with the sniffed type.",
    )
    original_name: StorableText = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[^\x00]+$",
        description="File name as the client sent it (no NUL).",
    )
    kind: str | None = Field(
        None,
        max_length=64,
        pattern=r"^[^\x00]*$",
        description="Caller's category for the file (free text, no NUL).",
    )
    metadata: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="Caller's JSON object, kept with the file (no NUL in keys or strings).",
    )

    @field_validator("kind")
    @classmethod
    def _storable_kind(cls, value: str | None) -> str | None:
        if value is not None and has_unstorable(value):
            raise ValueError("must not contain NUL (U+0000) or a lone surrogate")
        return value

    @field_validator("metadata")
    @classmethod
    def _no_nul(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        # PostgreSQL text and jsonb cannot hold U+0000, nor UTF-8 a lone surrogate: refuse
        # them here, where it is a clear validation error, rather than as a database error in
        # the commit stage.
        pending: list[JsonValue] = [value]
        while pending:
            item = pending.pop()
            if isinstance(item, str) and has_unstorable(item):
                raise ValueError("metadata must not contain NUL (U+0000) or a lone surrogate")
            if isinstance(item, dict):
                pending.extend(item.keys())
                pending.extend(item.values())
            elif isinstance(item, list):
                pending.extend(item)
        return value

    routing_key: ClassVar[str]
    #: Whether a publish must reach a queue (``mandatory``): every event that drives a stage
    #: must; ``file.committed`` is a notification for whoever subscribes, possibly nobody.
    must_route: ClassVar[bool] = True

    def follow(self, cls: builtins.type[E], **fields: Any) -> E:
        """Make the event of type ``cls`` that answers this one.

        The new event keeps the file description, has ``causation_id = self.event_id`` and a
        deterministic ``event_id`` (UUIDv5 of this id and the new type), so answering the same
        event twice yields the same event.
        """
        base = self.model_dump(
            exclude=set(type(self).model_fields) - set(_Event.model_fields) | {"type"}
        )
        base.update(
            event_id=uuid.uuid5(self.event_id, cls.routing_key),
            causation_id=self.event_id,
            occurred_at=utcnow(),
        )
        base.update(fields)
        return cls(**base)

    @property
    def stage_hint(self) -> str:
        """The event type without the `file.` prefix (`received`, `scanned`, ...)."""
        return self.type.removeprefix("file.")


E = TypeVar("E", bound=_Event)


class FileReceived(_Event):
    """A file has been accepted and its bytes are at ``source``; scanning comes next."""

    routing_key: ClassVar[str] = "file.received"
    type: Literal["file.received"] = "file.received"

    @classmethod
    def new(cls, **fields: Any) -> Self:
        """A new ``file.received`` with a random event id and ``occurred_at`` = now."""
        now = utcnow()
        fields.setdefault("event_id", uuid.uuid4())
        fields.setdefault("occurred_at", now)
        fields.setdefault("received_at", now)
        return cls(**fields)


class FileScanned(_Event):
    """The antivirus scanner found the bytes clean."""

    routing_key: ClassVar[str] = "file.scanned"
    type: Literal["file.scanned"] = "file.scanned"
    scanner: Annotated[str, safe_text(255)] = Field(
        max_length=255, description="Engine and version, e.g. `ClamAV 1.0.9`."
    )
    signature_version: Annotated[str, safe_text(255)] = Field(
        max_length=255, description="Signature database version and date as clamd reports it."
    )


class FileRejected(_Event):
    """The file will not be stored: infected, not scannable whole, outside the upload policy, or
    its bytes are not what the event says."""

    routing_key: ClassVar[str] = "file.rejected"
    type: Literal["file.rejected"] = "file.rejected"
    reason: Literal["infected", "invalid", "abandoned", "unscannable", "policy"] = Field(
        description="Why: infected; invalid bytes; abandoned (the gateway answered 503); "
        "unscannable (the scanner could not look into it whole: encrypted, or past its limits); "
        "policy (outside the upload policy: type, size, name or metadata)."
    )
    detail: Annotated[str, safe_text(2048)] = Field(
        max_length=2048, description="Human-readable explanation."
    )
    signature: Annotated[str, safe_text(255)] | None = Field(
        None,
        max_length=255,
        description="The scanner's name for what it found: the malware when infected, its "
        "alert (e.g. `Heuristics.Encrypted.PDF`) when unscannable.",
    )


class FileStored(_Event):
    """The original is in the bucket; S3 verified its SHA-256 on upload."""

    routing_key: ClassVar[str] = "file.stored"
    type: Literal["file.stored"] = "file.stored"
    bucket: str = Field(description="Bucket holding the original.")
    key: str = Field(description="Object key: `{owner}/{file_id}-{timestamp}-{name}`.")


class Thumbnail(BaseModel):
    """One stored thumbnail: a WebP, or a JPEG (the preview of an opaque image)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size_px: int = Field(ge=1, description="Requested long side, pixels.")
    key: str = Field(
        description="Object key of the thumbnail: `{original key}.thumb-{size_px}.webp` or `.jpg`."
    )
    width: int = Field(ge=1, description="Width, pixels.")
    height: int = Field(ge=1, description="Height, pixels.")
    size_bytes: int = Field(ge=1, description="Size of the object, bytes.")
    content_type: Literal["image/webp", "image/jpeg"] = Field(
        "image/webp",
        description="Media type of the object; absent from events made before JPEG previews, "
        "whose thumbnails are all WebP.",
    )


class FileThumbnailed(_Event):
    """Thumbnails are stored next to the original, or the file needs or could get none."""

    routing_key: ClassVar[str] = "file.thumbnailed"
    type: Literal["file.thumbnailed"] = "file.thumbnailed"
    bucket: str = Field(description="Bucket holding the original and the thumbnails.")
    key: str = Field(description="Object key of the original.")
    thumbnails: tuple[Thumbnail, ...] = Field(
        (), description="Thumbnails made; empty for non-images or when none could be made."
    )
    thumbnail_error: Annotated[str, safe_text(2048)] | None = Field(
        None, max_length=2048, description="Why an image got no thumbnails (corrupt, bomb...)."
    )


class FileFallback(_Event):
    """S3 stayed unavailable past the store stage's retries: the original is kept Base64 in
    PostgreSQL (``fallback_blobs``) until S3 is back and the fallback worker migrates it
    (seed 000, "S3 indisponible → stockage temporaire Base64 → migration automatique")."""

    routing_key: ClassVar[str] = "file.fallback"
    type: Literal["file.fallback"] = "file.fallback"
    reason: Annotated[str, safe_text(2048)] = Field(
        max_length=2048, description="Why S3 could not take the file."
    )


class FileDeferred(_Event):
    """S3 is unavailable and the file cannot go to the fallback either (too large): it waits in
    the store stage's dead-letter queue for a replay once S3 is back."""

    routing_key: ClassVar[str] = "file.deferred"
    type: Literal["file.deferred"] = "file.deferred"
    reason: Annotated[str, safe_text(2048)] = Field(
        max_length=2048, description="Why the file waits for a replay."
    )


class FileCorrupted(_Event):
    """A version recorded as stored has lost its object (or its bytes changed): found on read
    by the gateway or by ``sluice reconcile --fix`` (seed 004)."""

    routing_key: ClassVar[str] = "file.corrupted"
    type: Literal["file.corrupted"] = "file.corrupted"
    bucket: str = Field(description="Bucket that should hold the original.")
    key: str = Field(description="Object key that is missing or wrong.")
    detail: Annotated[str, safe_text(2048)] = Field(
        max_length=2048, description="What was found, and by whom."
    )

    @classmethod
    def about(cls, described: dict[str, Any], *, bucket: str, key: str, detail: str) -> Self:
        """The ``file.corrupted`` of one version, from its description (the common event fields
        except ids and times). Its ``event_id`` is a UUIDv5 of the file, version and key, so
        finding the same loss twice (two reads, a read and a reconcile) records it once."""
        fields = dict(described)
        name = f"file.corrupted:{fields['file_id']}:{fields.get('version_number', 1)}:{key}"
        fields.update(
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, name),
            causation_id=None,
            occurred_at=utcnow(),
            bucket=bucket,
            key=key,
            detail=detail,
        )
        return cls(**fields)


def version_description(
    row: Mapping[str, Any], file_id: uuid.UUID, version_number: int
) -> dict[str, Any]:
    """The common event fields of one version, from a ``files`` ⋈ ``file_versions`` row with
    ``owner, received_at, source, size_bytes, sha256, content_type, original_name, kind,
    metadata`` (for :meth:`FileCorrupted.about`)."""
    return {
        "file_id": file_id,
        "version_number": version_number,
        "owner": row["owner"],
        "received_at": row["received_at"],
        "source": row["source"],
        "size_bytes": row["size_bytes"],
        "sha256": row["sha256"],
        "content_type": row["content_type"],
        "original_name": row["original_name"],
        "kind": row["kind"],
        "metadata": row["metadata"] or {},
    }


class FileDeadLetterPurged(_Event):
    """An operator removed one of the file's dead letters for good (``sluice dlq purge``).

    A note for the file's history only: the commit stage records it and leaves the file's
    status as it was. Published with a publisher confirm before the dead letter is acked away,
    so a purge is never unrecorded. ``event_id`` is a UUIDv5 of the dead letter's event id and
    the stage (:meth:`about`), so purging a duplicate of the same dead letter records it once.
    """

    routing_key: ClassVar[str] = "file.dead_letter_purged"
    type: Literal["file.dead_letter_purged"] = "file.dead_letter_purged"
    stage: str = Field(
        min_length=1, max_length=64, description="Stage whose dead-letter queue held it."
    )
    dead_letter_event_id: uuid.UUID = Field(description="event_id of the purged message.")
    dead_letter_event_type: str = Field(
        max_length=255, description="Type of the purged event, e.g. `file.received`."
    )
    error_type: Annotated[str, safe_text(255)] | None = Field(
        None, max_length=255, description="Why it was dead-lettered: the error's type."
    )
    error_message: Annotated[str, safe_text(2048)] | None = Field(
        None, max_length=2048, description="Why it was dead-lettered: the error's message."
    )
    reason: Annotated[str, safe_text(2048)] = Field(
        min_length=1, max_length=2048, description="The operator's reason for the purge."
    )

    @classmethod
    def about(
        cls,
        dead: _Event,
        *,
        stage: str,
        error_type: str | None,
        error_message: str | None,
        reason: str,
    ) -> Self:
        """The purge record of the dead-lettered event ``dead`` taken from ``stage``'s queue."""
        return dead.follow(
            cls,
            event_id=uuid.uuid5(dead.event_id, f"{cls.routing_key}:{stage}"),
            stage=stage,
            dead_letter_event_id=dead.event_id,
            dead_letter_event_type=dead.type,
            error_type=error_type[:255] if error_type else None,
            error_message=error_message[:2048] if error_message else None,
            reason=reason[:2048],
        )


class FileDeadLettered(_Event):
    """A stage gave up on one of the file's messages: it sits in ``<stage>.dlq`` until an
    operator replays or purges it. Published by the run loop (``shared.runner``), confirmed,
    before the dead letter is acked away, so no file waits in a dead-letter queue unseen: the
    commit stage marks the file as needing attention (``files.attention``) until an event of
    its progress newer than the failure arrives (the replay worked). The status does not move.

    ``event_id`` is a UUIDv5 of the dead-lettered event's id, the stage and ``failed_at``, so a
    message dead-lettered again after a replay is recorded again.
    """

    routing_key: ClassVar[str] = "file.dead_lettered"
    type: Literal["file.dead_lettered"] = "file.dead_lettered"
    stage: str = Field(
        min_length=1, max_length=64, description="Stage whose dead-letter queue holds it."
    )
    dead_letter_event_id: uuid.UUID = Field(description="event_id of the dead-lettered message.")
    dead_letter_event_type: str = Field(
        max_length=255, description="Type of the dead-lettered event, e.g. `file.thumbnailed`."
    )
    error_type: Annotated[str, safe_text(255)] = Field(
        max_length=255, description="The error's type, e.g. `InvalidData`."
    )
    error_message: Annotated[str, safe_text(2048)] = Field(
        max_length=2048, description="The error's message."
    )
    attempts: int = Field(ge=1, description="Attempts made before it was dead-lettered.")
    failed_at: AwareDatetime = Field(description="When the last attempt failed, UTC.")

    @classmethod
    def about(
        cls,
        dead: _Event,
        *,
        stage: str,
        error_type: str,
        error_message: str,
        attempts: int,
        failed_at: datetime,
    ) -> Self:
        """The notice that ``dead`` was dead-lettered by ``stage`` after ``attempts``."""
        return dead.follow(
            cls,
            event_id=uuid.uuid5(
                dead.event_id, f"{cls.routing_key}:{stage}:{failed_at.isoformat()}"
            ),
            stage=stage,
            dead_letter_event_id=dead.event_id,
            dead_letter_event_type=dead.type,
            error_type=error_type,
            error_message=error_message or error_type,
            attempts=max(attempts, 1),
            failed_at=failed_at,
        )


class FileCommitted(_Event):
    """PostgreSQL holds the file's final state; the spooled bytes may go."""

    routing_key: ClassVar[str] = "file.committed"
    must_route: ClassVar[bool] = False
    type: Literal["file.committed"] = "file.committed"
    status: Literal[FileStatus.AVAILABLE, FileStatus.REJECTED] = Field(
        description="Final status of the file."
    )  # shared.status.FINAL


# --- File edits (PATCH /v1/files/{id}; docs/files-api.md) -----------------------------------


class FileUpdated(_Event):
    """The owner changed the file's ``original_name``, ``kind`` or ``metadata``
    (``PATCH /v1/files/{id}``). The gateway publishes it; the commit stage, the only writer of
    file state, applies the fields named in ``fields`` to the file and records the event in its
    history. The common fields describe the file's current version as the gateway read it, with
    the new values of the edited fields. An edit older (``occurred_at``) than the last one
    applied changes nothing, so edits delivered out of order after a retry keep the newest."""

    routing_key: ClassVar[str] = "file.updated"
    type: Literal["file.updated"] = "file.updated"
    fields: tuple[Literal["original_name", "kind", "metadata"], ...] = Field(
        min_length=1, description="The fields the edit sets; the others stay as they are."
    )


# -- Protection: rescans of stored files and their quarantine (docs/security.md) ------------


class FileRescanRequested(_Event):
    """Scan a stored version again with the scanner's current signatures (``sluice rescan``;
    seed 000: a scan that keeps protecting stored files as signatures change)."""

    routing_key: ClassVar[str] = "file.rescan_requested"
    type: Literal["file.rescan_requested"] = "file.rescan_requested"
    bucket: str = Field(description="Bucket holding the original.")
    key: str = Field(description="Object key of the original.")
    thumbnail_keys: list[str] = Field(
        default_factory=list, description="Object keys of its thumbnails (moved with it)."
    )
    rescan_id: uuid.UUID = Field(description="The `sluice rescan` run that asked.")

    @classmethod
    def about(
        cls,
        described: dict[str, Any],
        *,
        bucket: str,
        key: str,
        thumbnail_keys: list[str],
        rescan_id: uuid.UUID,
    ) -> Self:
        """The request of run ``rescan_id`` for one version, from its description (see
        :func:`version_description`); ``event_id`` is a UUIDv5 of the run, file and version,
        so publishing it twice in one run asks once."""
        name = f"file.rescan_requested:{rescan_id}:{described['file_id']}:"
        name += str(described.get("version_number", 1))
        return cls(
            **described,
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, name),
            causation_id=None,
            occurred_at=utcnow(),
            bucket=bucket,
            key=key,
            thumbnail_keys=thumbnail_keys,
            rescan_id=rescan_id,
        )


class FileRescanned(_Event):
    """A rescan found the stored bytes still clean; the version now records these versions."""

    routing_key: ClassVar[str] = "file.rescanned"
    type: Literal["file.rescanned"] = "file.rescanned"
    scanner: Annotated[str, safe_text(255)] = Field(
        max_length=255, description="Engine and version, e.g. `ClamAV 1.0.9`."
    )
    signature_version: Annotated[str, safe_text(255)] = Field(
        max_length=255, description="Signature database version and date as clamd reports it."
    )


class FileQuarantined(_Event):
    """A rescan found a stored version infected (or no longer scannable whole): its objects
    were moved to the quarantine prefix (copied, SHA-256 checked, then deleted); the version
    is never served again, and never deleted silently."""

    routing_key: ClassVar[str] = "file.quarantined"
    type: Literal["file.quarantined"] = "file.quarantined"
    signature: Annotated[str, safe_text(255)] = Field(
        max_length=255, description="The scanner's name for what it found."
    )
    scanner: Annotated[str, safe_text(255)] = Field(
        max_length=255, description="Engine and version that found it."
    )
    signature_version: Annotated[str, safe_text(255)] = Field(
        max_length=255, description="Signature database version that found it."
    )
    bucket: str = Field(description="Bucket holding the quarantined objects.")
    quarantine_keys: list[str] = Field(
        description="Where the original, its thumbnails and every object made from it (poster "
        "frames, HLS files, extracted text, renditions) are now (`_quarantine/<old key>`)."
    )


# --- Deletion (DELETE /v1/files/{id}, sluice gdpr erase) -------------------------------------


class FileDeleted(_Event):
    """The file is deleted: its owner asked (``DELETE /v1/files/{id}``), an erasure of its owner
    did (``sluice gdpr erase``), or the commit stage saw a stage event arrive for a file already
    deleted and asks for its bytes to be purged again (seed 000: GDPR deletion).

    The commit stage records it as the file's status ``deleted`` and removes the rest of the
    file's history, names and metadata; the purge worker removes every byte (objects of every
    version, thumbnails, fallback rows, spool entries). Consumers other than those two (a
    mirror) need only ``file_id`` and ``owner``. The description fields (name, size, ...) are
    those of the file's current version when it was deleted; none of them is kept in the
    history. docs/gdpr.md.
    """

    routing_key: ClassVar[str] = "file.deleted"
    type: Literal["file.deleted"] = "file.deleted"
    reason: Literal["owner", "erasure", "late_event"] = Field(
        description="Who asked: the owner (`DELETE /v1/files/{id}`), an erasure of the owner "
        "(`sluice gdpr erase`), or the commit stage, for a stage event that arrived after the "
        "deletion (its bytes are purged again)."
    )
    erasure_id: uuid.UUID | None = Field(
        None, description="The erasure (table `gdpr_erasures`) when `reason` is `erasure`."
    )

    @classmethod
    def of_file(
        cls,
        described: dict[str, Any],
        *,
        reason: Literal["owner", "erasure"],
        erasure_id: uuid.UUID | None = None,
    ) -> Self:
        """The deletion of one file, from its description (:func:`version_description`). Its
        ``event_id`` is a UUIDv5 of the file id, so deleting a file twice is one deletion."""
        fields = dict(described)
        fields.update(
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"file.deleted:{fields['file_id']}"),
            causation_id=None,
            occurred_at=utcnow(),
            reason=reason,
            erasure_id=erasure_id,
        )
        return cls(**fields)


class FileTextExtracted(_Event):
    """A transform (``pdftext`` or ``ocr``) stored the text of the original beside it
    (seeds 002 and 003: PDF text, OCR; docs/transforms.md)."""

    routing_key: ClassVar[str] = "file.text_extracted"
    type: Literal["file.text_extracted"] = "file.text_extracted"
    transform: Literal["pdftext", "ocr"] = Field(description="The stage that extracted it.")
    bucket: str = Field(description="Bucket holding the original and the text.")
    key: str = Field(description="Object key of the original.")
    text_key: str = Field(description="Object key of the text: `{original key}.text.txt`.")
    text_size_bytes: int = Field(ge=0, description="Size of the text object (UTF-8), bytes.")
    text_sha256: Sha256Hex
    pages: int = Field(
        ge=0, description="Pages of the PDF (1 for an image); the text has a form feed between."
    )
    pages_read: int = Field(
        ge=0, description="Pages whose text was read (SLUICE_PDFTEXT_MAX_PAGES)."
    )
    ocr_pages: int = Field(ge=0, description="Pages (or images) read by OCR.")
    language: str | None = Field(
        None, max_length=80, description="Tesseract languages of the OCR, e.g. `eng+fra`."
    )
    document_metadata: dict[str, Annotated[str, safe_text(1024)]] = Field(
        default_factory=dict, description="The PDF's document information (Title, Author...)."
    )
    search_text: Annotated[str, safe_text(1_000_000)] = Field(
        "",
        description="The text's first SLUICE_TEXT_SEARCH_MAX_CHARS characters, for the search "
        "index the commit stage keeps.",
    )
    search_truncated: bool = Field(
        False, description="Whether the text is longer than search_text."
    )


class FileTextFailed(_Event):
    """A transform could not read the original (not a readable PDF or image, an unknown OCR
    language, OCR timed out); the file stays as it is (``available``)."""

    routing_key: ClassVar[str] = "file.text_failed"
    type: Literal["file.text_failed"] = "file.text_failed"
    transform: Literal["pdftext", "ocr"] = Field(description="The stage that failed.")
    bucket: str = Field(description="Bucket holding the original.")
    key: str = Field(description="Object key of the original.")
    reason: Annotated[str, safe_text(2048)] = Field(
        max_length=2048, description="Why, e.g. `not a readable PDF: Failed to load document`."
    )


class HlsRendition(BaseModel):
    """One HLS rendition of a video: H.264 (and AAC when the source has sound) in MPEG-TS
    segments, listed by its media playlist (RFC 8216)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[0-9]{1,4}p$", description="Its name, e.g. `360p`.")
    playlist_key: str = Field(
        description="Object key of its media playlist: `{original key}.hls/{name}.m3u8`."
    )
    width: int = Field(ge=2, description="Width, pixels.")
    height: int = Field(ge=2, description="Height, pixels.")
    bandwidth: int = Field(ge=1, description="Peak bit rate the master announces, bits/s.")
    segments: int = Field(ge=1, description="Its MPEG-TS segments.")


class FileVideoProcessed(_Event):
    """The video stage stored a poster frame's thumbnails and an HLS rendition beside the
    original (seed 002: HLS streaming; docs/transforms.md)."""

    routing_key: ClassVar[str] = "file.video_processed"
    type: Literal["file.video_processed"] = "file.video_processed"
    bucket: str = Field(description="Bucket holding the original and what was derived.")
    key: str = Field(description="Object key of the original.")
    duration_s: float = Field(ge=0, description="Duration of the video (ffprobe), seconds.")
    width: int = Field(ge=1, description="Width of the source's video stream, pixels.")
    height: int = Field(ge=1, description="Height of the source's video stream, pixels.")
    video_codec: str = Field(max_length=64, description="Codec of the source, e.g. `h264`.")
    has_audio: bool = Field(description="Whether the source has sound (renditions carry AAC).")
    master_key: str = Field(
        description="Object key of the HLS master playlist: `{original key}.hls/master.m3u8`."
    )
    segment_s: int = Field(ge=1, description="Target segment length, seconds.")
    renditions: tuple[HlsRendition, ...] = Field(
        min_length=1, description="The renditions, smallest first."
    )
    poster: tuple[Thumbnail, ...] = Field(
        default=(),
        description="Thumbnails of the poster frame, the image thumbnails' sizes and formats: "
        "`{original key}.poster-{size_px}.webp` or `.jpg`.",
    )


class FileVideoFailed(_Event):
    """The video stage could not read the original (not a decodable video, too long, ffmpeg
    past its time); the file stays as it is (``available``)."""

    routing_key: ClassVar[str] = "file.video_failed"
    type: Literal["file.video_failed"] = "file.video_failed"
    bucket: str = Field(description="Bucket holding the original.")
    key: str = Field(description="Object key of the original.")
    reason: Annotated[str, safe_text(2048)] = Field(
        max_length=2048, description="Why, e.g. `not a decodable video: moov atom not found`."
    )


Event = Annotated[
    FileReceived
    | FileScanned
    | FileRejected
    | FileStored
    | FileThumbnailed
    | FileCommitted
    | FileFallback
    | FileDeferred
    | FileCorrupted
    | FileDeadLetterPurged
    | FileDeadLettered
    | FileUpdated
    | FileRescanRequested
    | FileRescanned
    | FileQuarantined
    | FileDeleted
    | FileTextExtracted
    | FileTextFailed
    | FileVideoProcessed
    | FileVideoFailed,
    Field(discriminator="type"),
]
EVENT_TYPES: tuple[type[_Event], ...] = (
    FileReceived,
    FileScanned,
    FileRejected,
    FileStored,
    FileThumbnailed,
    FileCommitted,
    FileFallback,
    FileDeferred,
    FileCorrupted,
    FileDeadLetterPurged,
    FileDeadLettered,
    FileUpdated,
    FileDeleted,
    *(FileRescanRequested, FileRescanned, FileQuarantined),
    *(FileTextExtracted, FileTextFailed),
    *(FileVideoProcessed, FileVideoFailed),
)
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
BaseEvent = _Event


def parse_event(body: bytes) -> BaseEvent:
    """Decode one message body.

    Raises:
        pydantic.ValidationError: not JSON, unknown type, wrong ``schema_version`` or bad fields.
    """
    event: BaseEvent = EVENT_ADAPTER.validate_json(body)
    return event


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each event type, keyed by routing key (`file.received`, ...)."""
    return {cls.routing_key: cls.model_json_schema() for cls in EVENT_TYPES}
