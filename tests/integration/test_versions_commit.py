"""Versions and edits in the commit stage and the ingress, against the real PostgreSQL
(database ``sluice_test_versions``): the file's current version is its latest available one,
``file.updated`` is applied once and never by an older edit nor for another owner, version
numbers are unique under concurrency and idempotent per event, and an upstream adds a version
only to a file of the owner it names (docs/files-api.md)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from services.commit.handler import Deps, handle
from services.commit.repository import FileRepository
from services.ingress.handler import Deps as IngressDeps
from services.ingress.handler import handle as ingress
from shared.adapters.db import create_pool
from shared.adapters.spool import LocalSpool
from shared.adapters.upstreams import UpstreamRecords
from shared.adapters.versions import VersionNumbers
from shared.errors import ForgedEvent, NotAllowed
from shared.events import (
    FileReceived,
    FileRejected,
    FileScanned,
    FileStored,
    FileThumbnailed,
    FileUpdated,
    utcnow,
)
from shared.naming import object_key
from shared.ports import Upstream
from shared.settings import DatabaseSettings
from shared.text import visible_name
from tests.localenv import FreshDatabase

pytestmark = pytest.mark.integration

BUCKET = "sluice-test"
UPSTREAM_BUCKET = "sluice-test-upstream"


@pytest.fixture(scope="module")
async def database(fresh_database: FreshDatabase) -> DatabaseSettings:
    return await fresh_database("sluice_test_versions")


@pytest.fixture(scope="module")
async def pool(database: DatabaseSettings) -> AsyncIterator[Any]:
    pool = await create_pool(database)
    yield pool
    await pool.close()


@pytest.fixture
def deps(pool: Any, tmp_path: Path) -> Deps:
    return Deps(repository=FileRepository(pool), spool=LocalSpool(tmp_path), bucket=BUCKET)


def received(file_id: uuid.UUID, version: int, data: bytes, owner: str = "alice") -> FileReceived:
    return FileReceived.new(
        file_id=file_id,
        version_number=version,
        owner=owner,
        source=f"s3://{UPSTREAM_BUCKET}/in/{uuid.uuid4()}",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="image/jpeg",
        original_name=f"v{version}.jpg",
        kind="photo",
        metadata={"v": version},
    )


async def through(event: FileReceived, deps: Deps, *, infected: bool = False) -> None:
    """Commit ``event`` and the events the stages would answer it with."""
    await handle(event, deps)
    scanned = event.follow(FileScanned, scanner="ClamAV", signature_version="1")
    await handle(scanned, deps)
    if infected:
        await handle(event.follow(FileRejected, reason="infected", detail="EICAR"), deps)
        return
    key = object_key(
        event.owner, event.file_id, event.received_at, event.original_name, event.version_number
    )
    stored = scanned.follow(FileStored, bucket=BUCKET, key=key)
    await handle(stored, deps)
    await handle(stored.follow(FileThumbnailed, bucket=BUCKET, key=key), deps)


async def file_row(pool: Any, file_id: uuid.UUID) -> Any:
    return await pool.fetchrow("SELECT * FROM files WHERE file_id = $1", file_id)


async def test_current_version_is_the_latest_available(pool: Any, deps: Deps) -> None:
    file_id = uuid.uuid4()
    await through(received(file_id, 1, b"one"), deps)
    two = received(file_id, 2, b"two")
    await handle(two, deps)  # in flight: the file stays at version 1, available
    row = await file_row(pool, file_id)
    assert (row["current_version"], row["status"]) == (1, "available")
    await through(received(file_id, 3, b"three"), deps, infected=True)
    row = await file_row(pool, file_id)
    assert (row["current_version"], row["status"]) == (1, "available")
    await through(two, deps)
    row = await file_row(pool, file_id)
    assert (row["current_version"], row["status"]) == (2, "available")
    assert row["original_name"] == "v2.jpg"  # the current version's name (no edit since)
    versions = await pool.fetch(
        "SELECT version_number, status, sha256, original_name, object_key FROM file_versions"
        " WHERE file_id = $1 ORDER BY version_number",
        file_id,
    )
    assert [(v["version_number"], v["status"]) for v in versions] == [
        (1, "available"),
        (2, "available"),
        (3, "rejected"),
    ]
    assert [v["sha256"] for v in versions] == [
        hashlib.sha256(d).hexdigest() for d in (b"one", b"two", b"three")
    ]
    assert [v["original_name"] for v in versions] == ["v1.jpg", "v2.jpg", "v3.jpg"]
    assert "-v2-" in versions[1]["object_key"]


def edit(first: FileReceived, *, at_offset_s: float = 0, owner: str = "alice", **new: Any) -> Any:
    fields = {
        "original_name": first.original_name,
        "kind": first.kind,
        "metadata": first.metadata,
        **new,
    }
    return FileUpdated(
        **first.model_dump(
            exclude={"type", "event_id", "occurred_at", "causation_id", "owner", *fields}
        ),
        event_id=uuid.uuid4(),
        occurred_at=utcnow() + timedelta(seconds=at_offset_s),
        owner=owner,
        fields=tuple(new),
        **fields,
    )


async def test_file_updated_is_applied_once_and_newest_wins(pool: Any, deps: Deps) -> None:
    file_id = uuid.uuid4()
    first = received(file_id, 1, b"edit me")
    await through(first, deps)
    newer = edit(first, at_offset_s=10, original_name="new.jpg", kind=None)
    older = edit(first, at_offset_s=5, original_name="old.jpg", metadata={"a": 1})
    assert await handle(newer, deps) == []
    await handle(newer, deps)  # redelivered: recorded once
    await handle(older, deps)  # delivered late: history only
    row = await file_row(pool, file_id)
    assert (row["original_name"], row["kind"], row["metadata"]) == ("new.jpg", None, {"v": 1})
    assert row["status"] == "available"
    types = await pool.fetch(
        "SELECT event_type FROM file_events WHERE file_id = $1 AND event_type = 'file.updated'",
        file_id,
    )
    assert len(types) == 2
    # A later stage event of the same version does not undo the edit, nor a version received
    # before the edit once it is current; a version received after the edit brings its name.
    await handle(first, deps)
    await through(received(file_id, 2, b"v2"), deps)
    row = await file_row(pool, file_id)
    assert (row["current_version"], row["original_name"]) == (2, "new.jpg")
    later = received(file_id, 3, b"v3").model_copy(
        update={"received_at": utcnow() + timedelta(seconds=20)}
    )
    await through(later, deps)
    row = await file_row(pool, file_id)
    assert (row["current_version"], row["original_name"]) == (3, "v3.jpg")


async def test_an_edit_of_another_owners_file_changes_nothing(pool: Any, deps: Deps) -> None:
    file_id = uuid.uuid4()
    first = received(file_id, 1, b"alice's")
    await through(first, deps)
    with pytest.raises(ForgedEvent, match="mallory"):
        await handle(edit(first, owner="mallory", original_name="pwned.jpg"), deps)
    with pytest.raises(ForgedEvent, match="not recorded"):
        await handle(edit(received(uuid.uuid4(), 1, b"x"), original_name="x.jpg"), deps)
    assert (await file_row(pool, file_id))["original_name"] == "v1.jpg"


async def test_version_numbers_are_unique_and_idempotent_per_event(pool: Any, deps: Deps) -> None:
    file_id = uuid.uuid4()
    await through(received(file_id, 1, b"base"), deps)
    numbers = VersionNumbers(pool)
    events = [uuid.uuid4() for _ in range(20)]
    got = await asyncio.gather(*(numbers.reserve(file_id, "alice", e) for e in events))
    assert sorted(got) == list(range(2, 22))
    assert await numbers.reserve(file_id, "alice", events[3]) == got[3]  # same event, same number
    assert await numbers.reserve(file_id, "alice", uuid.uuid4()) == 22  # never reused


@pytest.fixture
async def upstream(pool: Any) -> tuple[str, IngressDeps]:
    """An upstream allowed to name alice and bob, and the ingress stage's deps."""
    name = f"up-{uuid.uuid4().hex[:8]}"
    await UpstreamRecords(pool).add(
        Upstream(name=name, owners=("alice", "bob"), buckets=(UPSTREAM_BUCKET,))
    )
    return name, IngressDeps(
        upstreams=UpstreamRecords(pool),
        own_bucket=BUCKET,
        upstream_buckets=(UPSTREAM_BUCKET,),
        max_size_bytes=10 * 1024 * 1024,
        max_metadata_bytes=4096,
        clean_name=visible_name,
        versions=VersionNumbers(pool),
    )


async def test_an_upstream_adds_a_version_to_a_file_of_the_same_owner(
    pool: Any, deps: Deps, upstream: tuple[str, IngressDeps]
) -> None:
    user, checks = upstream
    file_id = uuid.uuid4()
    first = received(file_id, 1, b"upstream one")
    [passed] = await ingress(first, user, checks)
    assert passed.version_number == 1  # a new file
    await through(first, deps)
    again = await ingress(first, user, checks)  # redelivered after commit
    assert again[0].version_number == 1
    second = received(file_id, 1, b"upstream two")  # the upstream names the file, not a number
    [added] = await ingress(second, user, checks)
    assert added.version_number == 2
    [redelivered] = await ingress(second, user, checks)
    assert redelivered.version_number == 2
    await through(added, deps)
    row = await file_row(pool, file_id)
    assert (row["current_version"], row["owner"]) == (2, "alice")


async def test_an_upstream_naming_another_owners_file_is_refused(
    pool: Any, deps: Deps, upstream: tuple[str, IngressDeps]
) -> None:
    user, checks = upstream
    file_id = uuid.uuid4()
    await through(received(file_id, 1, b"alice's own"), deps)
    forged = received(file_id, 1, b"bob's bytes", owner="bob")
    with pytest.raises(NotAllowed, match="not a file of owner 'bob'"):
        await ingress(forged, user, checks)
    assert not await pool.fetchval(
        "SELECT count(*) FROM version_reservations WHERE file_id = $1", file_id
    )
    versions = await pool.fetchval("SELECT count(*) FROM file_versions WHERE file_id = $1", file_id)
    assert versions == 1
