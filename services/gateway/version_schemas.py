"""Bodies of the versions and edits routes (docs/files-api.md); they make ``/openapi.json``."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from services.gateway.schemas import FileUrls, StageEvent, ThumbnailOut
from shared.status import FileStatus


class VersionSummary(BaseModel):
    """One version of a file, as listed by ``GET /v1/files/{id}/versions``."""

    model_config = ConfigDict(frozen=True)

    version_number: int = Field(description="1, 2, 3, ... in the order they were reserved.")
    status: str = Field(description=", ".join(FileStatus) + ".")
    current: bool = Field(description="Whether this is the file's current version.")
    original_name: str = Field(description="The name this version was uploaded under.")
    content_type: str = Field(description="Media type sniffed from this version's bytes.")
    size_bytes: int = Field(description="Size of this version, bytes.")
    sha256: str = Field(description="SHA-256 of this version, lowercase hex.")
    received_at: datetime = Field(description="When this version was accepted, UTC.")
    rejection_reason: str | None = Field(description="Why it was rejected, if it was.")
    scanner: str | None = Field(description="Antivirus engine that scanned it.")
    signature_version: str | None = Field(description="Signature database it was scanned with.")
    version_url: str = Field(description="`/v1/files/<id>/versions/<n>`.")


class VersionList(BaseModel):
    """Every version of a file, oldest first."""

    model_config = ConfigDict(frozen=True)

    file_id: uuid.UUID
    current_version: int = Field(description="The file's current version (its latest available).")
    versions: list[VersionSummary]


class VersionDetail(VersionSummary):
    """One version: where its bytes are, its thumbnails and its own history."""

    stored: bool = Field(description="Whether its original is in object storage.")
    object_key: str | None = Field(description="Its object key; null until stored.")
    urls: FileUrls | None = Field(description="Where to fetch it; null until stored.")
    thumbnails: list[ThumbnailOut]
    thumbnail_error: str | None = Field(description="Why an image got no thumbnails.")
    history: list[StageEvent] = Field(description="This version's events, oldest first.")


class FileEdit(BaseModel):
    """``PATCH /v1/files/{id}``: the fields to change; those left out stay as they are."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    original_name: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="New name; its extension must be the file's type's, as for an upload.",
    )
    kind: str | None = Field(
        None, max_length=64, description="New category (null or empty clears it)."
    )
    metadata: dict[str, JsonValue] | None = Field(
        None,
        description="New metadata, a JSON object replacing the old one "
        "(SLUICE_GATEWAY_MAX_METADATA_BYTES).",
    )


class EditPending(BaseModel):
    """202: the edit is published (confirmed by RabbitMQ) but the commit stage had not applied
    it within SLUICE_FILES_EDIT_WAIT_S; it will. Follow ``status_url`` or the file's events."""

    model_config = ConfigDict(frozen=True)

    event_id: uuid.UUID = Field(description="event_id of the file.updated published.")
    status_url: str = Field(description="`/v1/files/<id>`: shows the edit once applied.")


class CopyAccepted(BaseModel):
    """202: the copy is in the bucket, checked by SHA-256, and its file.received is confirmed;
    it is committed like any upload (scan, thumbnails, commit)."""

    model_config = ConfigDict(frozen=True)

    file_id: uuid.UUID = Field(description="The new file.")
    copied_from: uuid.UUID = Field(description="The file copied.")
    version_number: int = Field(description="The version of the file copied.")
    status_url: str
    sha256: str
    size_bytes: int
    object_key: str = Field(description="The copy's object key.")
