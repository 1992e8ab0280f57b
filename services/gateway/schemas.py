"""Response bodies of the gateway's API (they make ``/openapi.json``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from shared.status import FileStatus


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorDetail(_Body):
    """What went wrong."""

    code: str = Field(description="Stable machine-readable code, e.g. `too_large`.")
    message: str = Field(description="Human-readable explanation.")


class ErrorBody(_Body):
    """Every error answer: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


class UploadAccepted(_Body):
    """202: the bytes are spooled and ``file.received`` is confirmed by RabbitMQ."""

    file_id: uuid.UUID
    status: Literal[FileStatus.RECEIVED] = FileStatus.RECEIVED
    status_url: str = Field(description="Where to follow the file: `/v1/files/<file_id>`.")
    sha256: str = Field(description="SHA-256 of the bytes received, lowercase hex.")
    size_bytes: int = Field(description="Size of the file, bytes.")
    content_type: str = Field(description="Media type sniffed from the bytes (libmagic).")
    original_name: str = Field(description="The name kept (control characters removed).")
    version_number: int = Field(1, description="The version this upload is: 1 for a new file.")


class StageEvent(_Body):
    """One row of a file's stage history (table ``file_events``)."""

    type: str = Field(description="Event type: `file.received`, `file.scanned`, ...")
    version_number: int = Field(description="File version the event is about.")
    occurred_at: datetime = Field(description="When the stage emitted it, UTC.")
    recorded_at: datetime = Field(description="When the commit consumer recorded it, UTC.")
    detail: str | None = Field(None, description="Reason or note (rejections, failures).")


class ThumbnailOut(_Body):
    """A stored thumbnail (WebP, or a JPEG preview) and a presigned URL to fetch it."""

    size_px: int = Field(description="Requested long side, pixels.")
    width: int = Field(description="Width, pixels.")
    height: int = Field(description="Height, pixels.")
    size_bytes: int = Field(description="Size of the object, bytes.")
    content_type: str = Field(
        description="`image/webp`, or `image/jpeg` for the preview (1024 px) of an opaque image."
    )
    url: str | None = Field(description="Presigned GET URL (expires at `urls.expires_at`).")


class FileUrls(_Body):
    """Where to fetch a stored original."""

    original: str | None = Field(
        description="Presigned GET URL of the original (S3); null while the bytes are in the "
        "PostgreSQL fallback."
    )
    content: str = Field(description="`/v1/files/<id>/content`: the original via the gateway.")
    expires_at: datetime = Field(description="When the presigned URLs expire, UTC.")


class FileAttention(_Body):
    """Why a file needs a person: a stage dead-lettered one of its messages, which waits in
    ``<stage>.dlq`` for a replay (``sluice dlq replay --stage STAGE --file-id ID``) or a purge.
    Cleared once the file moves again."""

    stage: str = Field(description="Stage whose dead-letter queue holds the message.")
    event_type: str = Field(description="Type of the dead-lettered event.")
    event_id: uuid.UUID = Field(description="event_id of the dead-lettered message.")
    error_type: str = Field(description="The error's type, e.g. `InvalidData`.")
    error_message: str = Field(description="The error's message.")
    attempts: int = Field(description="Attempts made before it was dead-lettered.")
    failed_at: datetime = Field(description="When the last attempt failed, UTC.")


class FileSummary(_Body):
    """A file as listed by ``GET /v1/files``."""

    file_id: uuid.UUID
    status: str = Field(description=", ".join(FileStatus) + ".")
    original_name: str
    content_type: str
    kind: str | None
    size_bytes: int | None = Field(description="Size of the current version, bytes.")
    sha256: str | None = Field(description="SHA-256 of the current version, lowercase hex.")
    received_at: datetime
    status_url: str
    attention: FileAttention | None = Field(
        None,
        description="Set when a stage dead-lettered one of the file's messages: it needs a "
        "person (replay or purge); null otherwise.",
    )


class TextArtefact(_Body):
    """The text a transform extracted from the file's current version (docs/transforms.md)."""

    kind: Literal["text"] = "text"
    transform: Literal["pdftext", "ocr"] = Field(description="The stage that extracted it.")
    content_type: str = Field(description="`text/plain; charset=utf-8`; pages split by U+000C.")
    size_bytes: int = Field(description="Size of the text, bytes (UTF-8).")
    pages: int = Field(description="Pages of the PDF (1 for an image).")
    ocr_pages: int = Field(description="Pages (or the image) read by OCR.")
    language: str | None = Field(description="Tesseract languages of the OCR, e.g. `eng+fra`.")
    document_metadata: dict[str, str] = Field(description="The PDF's Title, Author, ...")
    search_truncated: bool = Field(
        description="Whether only the text's start is searchable (SLUICE_TEXT_SEARCH_MAX_CHARS)."
    )
    url: str = Field(description="Where to read it: `GET /v1/files/{file_id}/text`.")


class RenditionOut(_Body):
    """One HLS rendition of a video."""

    name: str = Field(description="Its name, e.g. `720p`.")
    width: int = Field(description="Width, pixels.")
    height: int = Field(description="Height, pixels.")
    bandwidth: int = Field(description="Peak bit rate the master playlist announces, bits/s.")
    url: str = Field(description="Its media playlist: `GET /v1/files/{file_id}/hls/{name}.m3u8`.")


class HlsArtefact(_Body):
    """The HLS rendition the video stage made of the file's current version
    (docs/transforms.md)."""

    kind: Literal["hls"] = "hls"
    transform: Literal["video"] = "video"
    content_type: str = Field(description="`application/vnd.apple.mpegurl` (RFC 8216).")
    duration_s: float = Field(description="Duration of the video, seconds.")
    width: int = Field(description="Width of the source, pixels.")
    height: int = Field(description="Height of the source, pixels.")
    has_audio: bool = Field(description="Whether the renditions carry sound (AAC).")
    segment_s: int = Field(description="Target segment length, seconds.")
    renditions: list[RenditionOut] = Field(description="The renditions, smallest first.")
    url: str = Field(
        description="The master playlist: `GET /v1/files/{file_id}/hls/master.m3u8` (the API "
        "key's owner only; segments are presigned URLs)."
    )


class PosterArtefact(_Body):
    """A thumbnail of a video's poster frame (the image thumbnails' sizes and formats)."""

    kind: Literal["poster"] = "poster"
    transform: Literal["video"] = "video"
    size_px: int = Field(description="Requested long side, pixels.")
    width: int = Field(description="Width, pixels.")
    height: int = Field(description="Height, pixels.")
    size_bytes: int = Field(description="Size of the object, bytes.")
    content_type: str = Field(description="`image/webp`, or `image/jpeg` for the large preview.")
    url: str | None = Field(description="Presigned GET URL (expires at `urls.expires_at`).")


Artefact = Annotated[TextArtefact | HlsArtefact | PosterArtefact, Field(discriminator="kind")]


class FileDetail(FileSummary):
    """Everything known about one file (``GET /v1/files/{file_id}``)."""

    status_reason: str | None = Field(description="Why the status is what it is, if said.")
    metadata: dict[str, JsonValue]
    version_number: int
    updated_at: datetime
    stored: bool = Field(description="Whether the original is in object storage.")
    storage: Literal["s3", "postgresql"] | None = Field(
        description="Where the original's bytes are: `s3`, `postgresql` (the Base64 fallback "
        "while S3 was down, until it is migrated back), or null (not stored yet, or lost)."
    )
    object_key: str | None = Field(
        None, description="Object key of the original in the bucket; null until stored."
    )
    urls: FileUrls | None = Field(description="Where to fetch the original; null until stored.")
    thumbnails: list[ThumbnailOut]
    thumbnail_error: str | None = Field(description="Why an image got no thumbnails.")
    scanner: str | None = Field(
        None, description="clamd engine that last scanned this version (upload or rescan)."
    )
    signature_version: str | None = Field(
        None, description="Signature database version of that scan, as clamd reports it."
    )
    artefacts: list[Artefact] = Field(
        default_factory=list,
        description="What the transforms derived from the current version: its text, a "
        "video's HLS master playlist and poster thumbnails.",
    )
    text_error: str | None = Field(
        None, description="Why the text transform could not read the current version."
    )
    video_error: str | None = Field(
        None, description="Why the video stage could not read the current version."
    )
    history: list[StageEvent] = Field(description="Stage events, oldest first.")


class FileList(_Body):
    """A page of the caller's files, newest first."""

    files: list[FileSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class Readiness(_Body):
    """``/readyz``: each dependency's check, `ok` or what failed."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, str]
