"""``sluice reconcile`` on the local storage backend (``SLUICE_STORAGE_BACKEND=local``), run as a
process as cron would, with S3 pointed at a closed port: the same findings as on S3 (missing
objects and thumbnails, orphans past the grace period, bytes that changed), from the real
PostgreSQL (database ``sluice_test_reconcile_local``) and a real directory.

Objects are written through :class:`LocalObjectStorage` (its sidecar, as the stages write them);
rows as the commit stage records them.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from shared.adapters.local_storage import LocalObjectStorage
from shared.adapters.signed_urls import UrlSigner
from shared.naming import object_key, thumbnail_key
from tests.databases import fresh_database
from tests.integration.test_reconcile import Run, Version, sluice_reconcile

pytestmark = pytest.mark.integration

DATABASE = "sluice_test_reconcile_local"
BUCKET = "sluice-test-reconcile-local"


class LocalBucket:
    """What ``test_reconcile.record`` asks of an S3 client, over the local backend."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def storage(self) -> LocalObjectStorage:
        return LocalObjectStorage(self.root, BUCKET, signer=UrlSigner(b"s" * 32))

    def put(self, key: str, data: bytes) -> None:
        sha256 = hashlib.sha256(data).hexdigest()
        asyncio.run(
            self.storage().put_bytes(
                key, data, sha256_hex=sha256, content_type="application/octet-stream"
            )
        )

    def delete(self, key: str) -> None:
        asyncio.run(self.storage().delete(key))

    def path(self, key: str) -> Path:
        return self.root / BUCKET / key


@pytest.fixture(scope="module")
def database(services: object) -> str:
    return fresh_database(DATABASE).url


@pytest.fixture
def local(tmp_path: Path, database: str) -> Iterator[LocalBucket]:
    """An empty local store and empty tables."""
    with psycopg.connect(database) as conn:
        conn.execute("TRUNCATE files, file_versions, file_events CASCADE")
    root = tmp_path / "objects"
    root.mkdir()
    yield LocalBucket(root)


def record(local: LocalBucket, database: str, count: int) -> list[Version]:
    """``count`` available versions (owners alice and bob in turn) with a 256 px thumbnail each,
    recorded as the commit stage does and written through the local backend."""
    versions = []
    received = datetime.now(UTC)
    with psycopg.connect(database) as conn:
        for n in range(count):
            file_id, owner = uuid.uuid4(), ("alice", "bob")[n % 2]
            key = object_key(owner, file_id, received, "cat.jpg")
            thumb = thumbnail_key(key, 256)
            data = f"original {file_id}".encode()
            local.put(key, data)
            local.put(thumb, b"thumb")
            thumbs = [{"size_px": 256, "key": thumb, "width": 256, "height": 170, "size_bytes": 5}]
            conn.execute(
                "INSERT INTO files (file_id, owner, original_name, content_type, status,"
                " received_at) VALUES (%s, %s, 'cat.jpg', 'image/jpeg', 'available', %s)",
                (file_id, owner, received),
            )
            conn.execute(
                "INSERT INTO file_versions (file_id, version_number, status, size_bytes, sha256,"
                " source, bucket, object_key, thumbnails)"
                " VALUES (%s, 1, 'available', %s, %s, %s, %s, %s, %s)",
                (
                    file_id,
                    len(data),
                    hashlib.sha256(data).hexdigest(),
                    f"spool://{file_id}",
                    BUCKET,
                    key,
                    Jsonb(thumbs),
                ),
            )
            versions.append(Version(file_id, key, (thumb,), data))
    return versions


def run_local(local: LocalBucket, database: str, *args: str) -> Run:
    return sluice_reconcile(
        *args,
        bucket=BUCKET,
        SLUICE_DATABASE_URL=database,
        SLUICE_STORAGE_BACKEND="local",
        SLUICE_STORAGE_LOCAL_DIR=str(local.root),
        S3_ENDPOINT="http://127.0.0.1:1",  # nothing may talk to S3
    )


def test_a_consistent_local_store_reports_nothing(local: LocalBucket, database: str) -> None:
    record(local, database, 4)
    run = run_local(local, database, "--json", "--listing-order", "segments")
    assert run.code == 0, run.stderr + run.stdout
    counts = run.doc["counts"]
    assert counts["objects_listed"] == counts["keys_expected"] == 4 * 2
    assert counts["originals_checked"] == 4
    for kind in ("missing_objects", "missing_thumbnails", "orphans", "checksum_mismatches"):
        assert counts[kind] == 0, run.doc


def test_missing_objects_orphans_and_changed_bytes_are_found(
    local: LocalBucket, database: str
) -> None:
    gone, thumbless, changed, _ = record(local, database, 4)
    local.delete(gone.key)
    local.delete(thumbless.thumbnails[0])
    orphan = f"alice/{uuid.uuid4()}-20260101T000000Z-left-behind.jpg"
    local.put(orphan, b"x" * 321)
    # Bytes changed behind the store's back, same size: only --deep can tell.
    local.path(changed.key).write_bytes(bytes(reversed(changed.data)))

    run = run_local(
        local, database, "--json", "--deep", "--grace", "0s", "--listing-order", "segments"
    )
    assert run.code == 1, run.stderr + run.stdout
    assert [m["key"] for m in run.doc["missing_objects"]] == [gone.key]
    assert [m["key"] for m in run.doc["missing_thumbnails"]] == [thumbless.thumbnails[0]]
    [found] = run.doc["orphans"]
    assert (found["key"], found["size_bytes"]) == (orphan, 321)
    [mismatch] = run.doc["checksum_mismatches"]
    assert (mismatch["key"], mismatch["check"]) == (changed.key, "sha256")
    assert local.path(orphan).exists()  # reported, never deleted
