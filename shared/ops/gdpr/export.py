"""Exporting an owner's data (seed 000: GDPR export; docs/gdpr.md).

:func:`export_owner` (``sluice gdpr export --owner X --out FILE.zip``) writes one zip:

- ``files/<file_id>/v<n>-<name>``: the bytes of every version of every file of the owner that
  has bytes (in the bucket on either storage backend, or in the Base64 fallback while S3 was
  down), streamed chunk by chunk into the zip (``ZipFile.open(name, "w")``), so memory stays
  flat whatever the size; each is hashed on the way and compared with the SHA-256 recorded
  when it was stored;
- ``files/<file_id>/v<n>-<name>.text.txt``: the text the pdftext or ocr stage extracted from
  a version, if any (docs/transforms.md);
- ``metadata.json``: the owner, when, and for each file its name, type, kind, metadata, status,
  its versions (size, SHA-256, where the bytes are in the zip, whether their SHA-256 matched,
  its extracted text or why there is none, a video's HLS renditions or why there are none: the
  renditions themselves are derived from the original and not copied) and its history (every
  recorded event: type, version, times, detail).

Deleted files (and files whose deletion is under way) are not exported. The zip is written to
``FILE.zip.partial`` and renamed into place once complete: a failed export leaves nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.adapters.db import create_pool
from shared.adapters.object_storage import open_object_storage
from shared.adapters.row_cipher import RowCipher
from shared.errors import SourceMissing
from shared.events import utcnow
from shared.naming import sanitise_name
from shared.ops.gdpr.erase import check_owner_name
from shared.ports import ObjectStore
from shared.settings import Settings

#: ``on_progress(done_bytes, total_bytes)``: bytes of originals written so far, of all.
Progress = Callable[[int, int], None]

#: Read and written at a time, bytes.
CHUNK_BYTES = 1024 * 1024
#: Past this size a member is written as ZIP64 (the classic format stops at 4 GiB).
_ZIP64_FROM_BYTES = 2**31

_VERSIONS = """
SELECT f.file_id, f.original_name, f.content_type, f.kind, f.metadata, f.status,
       f.status_reason, f.current_version, f.received_at, f.updated_at,
       v.version_number, v.status AS version_status, v.size_bytes, v.sha256, v.bucket,
       v.object_key, v.thumbnails, v.created_at AS version_created_at,
       EXISTS (SELECT 1 FROM fallback_blobs b
               WHERE b.file_id = v.file_id AND b.version_number = v.version_number
                 AND b.owner = f.owner) AS in_fallback,
       t.transform, t.state AS text_state, t.text_key, t.size_bytes AS text_size_bytes,
       t.pages AS text_pages, t.language AS text_language, t.error AS text_error,
       vd.state AS video_state, vd.duration_s AS video_duration_s,
       vd.renditions AS video_renditions, vd.error AS video_error
FROM files f JOIN file_versions v ON v.file_id = f.file_id
LEFT JOIN file_texts t
    ON t.file_id = v.file_id AND t.version_number = v.version_number AND t.owner = f.owner
LEFT JOIN file_videos vd
    ON vd.file_id = v.file_id AND vd.version_number = v.version_number AND vd.owner = f.owner
WHERE f.owner = $1 AND f.status <> 'deleted'
  AND NOT EXISTS (SELECT 1 FROM file_deletions d WHERE d.file_id = f.file_id)
ORDER BY f.received_at, f.file_id, v.version_number
"""

_HISTORY = """
SELECT file_id, seq, event_type, version_number, occurred_at, recorded_at, detail
FROM file_events WHERE file_id = ANY($1::uuid[]) ORDER BY file_id, seq
"""


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: ``files``, ``versions`` with bytes in the zip, ``bytes_written``
    (originals), ``missing`` (versions recorded as stored whose bytes could not be read)."""

    files: int
    versions: int
    bytes_written: int
    missing: int


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


async def _copy(storage: ObjectStore, key: str, dest: Any, on_chunk: Callable[[int], None]) -> str:
    digest = hashlib.sha256()
    async with storage.open_stream(key, CHUNK_BYTES) as (_, chunks):
        async for chunk in chunks:
            digest.update(chunk)
            await asyncio.to_thread(dest.write, chunk)
            on_chunk(len(chunk))
    return digest.hexdigest()


async def _export_text(
    storage: ObjectStore, archive: zipfile.ZipFile, row: Any, name: str
) -> dict[str, Any]:
    """Write the version's extracted text to ``<name>.text.txt`` in ``archive``; what
    ``metadata.json`` says of it (transform, state, pages, language, path, or the error)."""
    text: dict[str, Any] = {
        "transform": row["transform"],
        "state": row["text_state"],
        "pages": row["text_pages"],
        "language": row["text_language"],
        "error": row["text_error"],
        "path": None,
    }
    if row["text_key"]:
        path = f"{name}.text.txt"
        try:
            with archive.open(path, "w") as dest:
                await _copy(storage, row["text_key"], dest, lambda n: None)
        except SourceMissing:
            text["missing"] = True
        else:
            text["path"] = path
    return text


async def export_owner(
    settings: Settings, owner: str, out: Path, *, on_progress: Progress | None = None
) -> ExportSummary:
    """Write ``owner``'s export to ``out`` (module docstring).

    Raises:
        InvalidOwner: ``owner`` is not an owner name.
        DatabaseUnavailable, StorageUnavailable: a dependency is down (no zip is left).
        OSError: ``out`` cannot be written.
    """
    check_owner_name(owner)
    progress = on_progress or (lambda done, total: None)
    cipher = RowCipher.from_settings(settings.fallback)  # before anything is opened
    pool = await create_pool(settings.database)
    partial = out.with_name(out.name + ".partial")
    try:
        rows = await pool.fetch(_VERSIONS, owner)
        file_ids = sorted({row["file_id"] for row in rows})
        history: dict[Any, list[dict[str, Any]]] = {}
        for event in await pool.fetch(_HISTORY, file_ids):
            history.setdefault(event["file_id"], []).append(
                {k: _plain(event[k]) for k in event.keys() if k != "file_id"}
            )
        total = sum(row["size_bytes"] for row in rows if row["object_key"] or row["in_fallback"])
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            progress(done, total)

        files: dict[Any, dict[str, Any]] = {}
        versions = missing = 0
        async with open_object_storage(settings) as storage:
            with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive:
                for row in rows:
                    file_id = row["file_id"]
                    entry = files.setdefault(
                        file_id,
                        {
                            "file_id": str(file_id),
                            **{
                                k: _plain(row[k])
                                for k in (
                                    "original_name",
                                    "content_type",
                                    "kind",
                                    "metadata",
                                    "status",
                                    "status_reason",
                                    "current_version",
                                    "received_at",
                                    "updated_at",
                                )
                            },
                            "versions": [],
                            "history": history.get(file_id, []),
                        },
                    )
                    n = row["version_number"]
                    name = f"files/{file_id}/v{n}-{sanitise_name(row['original_name'])}"
                    version: dict[str, Any] = {
                        "version_number": n,
                        "status": row["version_status"],
                        "size_bytes": row["size_bytes"],
                        "sha256": row["sha256"],
                        "created_at": _plain(row["version_created_at"]),
                        "thumbnails": len(row["thumbnails"] or []),
                        "path": None,
                        "sha256_matches": None,
                    }
                    entry["versions"].append(version)
                    if row["text_state"] is not None:
                        version["text"] = await _export_text(storage, archive, row, name)
                    if row["video_state"] is not None:  # derived from the original: not copied
                        version["video"] = {
                            "state": row["video_state"],
                            "duration_s": row["video_duration_s"],
                            "renditions": [r["name"] for r in row["video_renditions"] or []],
                            "error": row["video_error"],
                        }
                    large = row["size_bytes"] > _ZIP64_FROM_BYTES
                    sha256: str | None = None
                    if row["object_key"] and row["bucket"] == storage.bucket:
                        try:
                            with archive.open(name, "w", force_zip64=large) as dest:
                                sha256 = await _copy(storage, row["object_key"], dest, advance)
                        except SourceMissing:
                            missing += 1
                            version["missing"] = True
                            continue
                    elif row["in_fallback"]:
                        kept = await pool.fetchrow(
                            "SELECT data_base64, sha256 FROM fallback_blobs"
                            " WHERE file_id = $1 AND version_number = $2",
                            file_id,
                            n,
                        )
                        if kept is None:  # migrated meanwhile; the next export has it
                            continue
                        # plain Base64, or sealed (SLUICE_FALLBACK_ENCRYPTION_*): opened alike
                        data = await asyncio.to_thread(
                            cipher.open,
                            kept["data_base64"],
                            file_id=file_id,
                            version_number=n,
                            sha256=kept["sha256"],
                        )
                        archive.writestr(name, data)
                        sha256 = hashlib.sha256(data).hexdigest()
                        advance(len(data))
                    else:
                        continue
                    versions += 1
                    version.update(path=name, sha256_matches=sha256 == row["sha256"])
                document = {
                    "owner": owner,
                    "exported_at": utcnow().isoformat(),
                    "files": list(files.values()),
                }
                archive.writestr(
                    "metadata.json",
                    json.dumps(document, indent=2, ensure_ascii=False),
                    compress_type=zipfile.ZIP_DEFLATED,
                )
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        await pool.close()
    return ExportSummary(files=len(files), versions=versions, bytes_written=done, missing=missing)
