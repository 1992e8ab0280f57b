"""The Base64 fallback on the local storage backend, against the real PostgreSQL: while the
storage root is unreachable (an unmounted volume) the migration waits, and once it is back the
row is written to the directory with its SHA-256 checked, announced and deleted, exactly as with
S3 (docs/fallback.md, docs/storage.md)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.fallback import migrator
from services.fallback.handler import Deps, handle
from services.fallback.repository import FallbackRepository
from shared.adapters.db import create_pool
from shared.adapters.local_storage import LocalObjectStorage
from shared.adapters.signed_urls import UrlSigner
from shared.adapters.sources import SpoolOrS3SourceReader
from shared.adapters.spool import LocalSpool
from shared.events import FileStored
from shared.retry import FailureHistory
from tests.e2e.pipeline import ROOT
from tests.integration.test_store import scanned, spooled
from tests.localenv import FreshDatabase

pytestmark = pytest.mark.integration
BUCKET = "sluice-test-local-fallback"
PHOTO = (ROOT / "samples" / "photo-rotated.jpg").read_bytes()


@pytest.fixture(scope="module")
async def pool(fresh_database: FreshDatabase) -> AsyncIterator[Any]:
    pool = await create_pool(await fresh_database("sluice_test_local_fallback"))
    yield pool
    await pool.close()


async def test_migration_waits_for_the_root_then_writes_verifies_and_announces(
    pool: Any, tmp_path: Path
) -> None:
    repository = FallbackRepository(pool)
    await pool.execute("DELETE FROM fallback_blobs")
    root = tmp_path / "volume"  # not mounted yet
    storage = LocalObjectStorage(root, BUCKET, signer=UrlSigner(b"s" * 32))
    spool = LocalSpool(tmp_path / "spool")
    event = scanned(PHOTO, await spooled(spool, PHOTO))
    failed = FailureHistory(
        stage="store", attempts=3, error_type="StorageUnavailable", error_message="root missing"
    )
    sources = SpoolOrS3SourceReader(spool, storage)
    await handle(event, failed, Deps(sources=sources, repository=repository, max_bytes=2**24))
    published: list[Any] = []

    async def publish(stored: Any) -> None:
        published.append(stored)

    deps = migrator.Deps(
        repository=repository, storage=storage, publish=publish, multipart_threshold_bytes=2**23
    )
    down = await migrator.migrate_batch(deps, 10)
    assert (down.migrated, published) == (0, [])
    assert down.stopped is not None and "storage root unreachable" in str(down.stopped)
    assert await pool.fetchval("SELECT count(*) FROM fallback_blobs") == 1

    root.mkdir()  # the volume is back
    report = await migrator.migrate_batch(deps, 10)
    assert (report.migrated, report.failed, report.stopped) == (1, 0, None)
    [stored] = published
    assert isinstance(stored, FileStored) and stored.bucket == BUCKET
    on_disk = (root / BUCKET / stored.key).read_bytes()
    assert hashlib.sha256(on_disk).hexdigest() == event.sha256
    assert await pool.fetchval("SELECT count(*) FROM fallback_blobs") == 0
