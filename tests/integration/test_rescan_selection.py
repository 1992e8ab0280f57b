"""Which versions ``sluice rescan`` asks for (``shared/ops/rescan.py``), against the real
PostgreSQL (database ``sluice_test_rescan_selection``): available versions in the bucket, by
owner, and by the signature database number they were last scanned with."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from shared.adapters import db
from shared.ops.rescan import RescanSelection, rescan_request, select_versions
from tests.localenv import FreshDatabase

pytestmark = pytest.mark.integration

BUCKET = "sluice"
# (owner, status, signature_version, bucket)
VERSIONS = {
    "old": ("alice", "available", "27000/Tue Nov 19 09:32:00 2024", BUCKET),
    "new": ("alice", "available", "27500/Mon Dec  1 09:00:00 2026", BUCKET),
    "unknown": ("alice", "available", "unknown", BUCKET),
    "bob": ("bob", "available", "27000/Tue Nov 19 09:32:00 2024", BUCKET),
    "rejected": ("alice", "rejected", "27000/Tue Nov 19 09:32:00 2024", BUCKET),
    "quarantined": ("alice", "quarantined", "27000/Tue Nov 19 09:32:00 2024", BUCKET),
    "elsewhere": ("alice", "available", "27000/Tue Nov 19 09:32:00 2024", "other-bucket"),
}


@pytest.fixture
async def pool(fresh_database: FreshDatabase) -> AsyncIterator[asyncpg.Pool]:
    settings = await fresh_database("sluice_test_rescan_selection")
    pool = await db.create_pool(settings)
    try:
        yield pool
    finally:
        await pool.close()


async def insert(pool: asyncpg.Pool) -> dict[uuid.UUID, str]:
    names = {}
    for name, (owner, status, signatures, bucket) in VERSIONS.items():
        file_id = uuid.uuid4()
        names[file_id] = name
        await pool.execute(
            "INSERT INTO files (file_id, owner, original_name, content_type, status, received_at)"
            " VALUES ($1, $2, $3, 'image/png', $4, $5)",
            file_id,
            owner,
            f"{name}.png",
            status,
            datetime.now(UTC),
        )
        await pool.execute(
            "INSERT INTO file_versions (file_id, version_number, status, size_bytes, sha256,"
            " source, bucket, object_key, signature_version, thumbnails)"
            " VALUES ($1, 1, $2, 3, $3, 'spool://x', $4, $5, $6, $7)",
            file_id,
            status,
            "a" * 64,
            bucket,
            f"{owner}/{file_id}-{name}.png",
            signatures,
            [{"key": f"{owner}/{file_id}-{name}.png.thumb-256.webp", "size_px": 256}],
        )
    return names


async def test_selection_by_owner_and_signature_database(pool: asyncpg.Pool) -> None:
    names = await insert(pool)

    async def chosen(selection: RescanSelection) -> set[str]:
        return {names[r["file_id"]] for r in await select_versions(pool, BUCKET, selection)}

    assert await chosen(RescanSelection()) == {"old", "new", "unknown", "bob"}
    assert await chosen(RescanSelection(owner="alice")) == {"old", "new", "unknown"}
    assert await chosen(RescanSelection(older_than_signature=27500)) == {"old", "unknown", "bob"}
    assert await chosen(RescanSelection(owner="bob", older_than_signature=27000)) == set()

    [row] = [
        r
        for r in await select_versions(pool, BUCKET, RescanSelection())
        if names[r["file_id"]] == "new"
    ]
    request = rescan_request(row, uuid.uuid4())
    assert request.key == row["object_key"] and request.thumbnail_keys == [
        row["thumbnails"][0]["key"]
    ]
