"""The commit stage against the real PostgreSQL (database ``sluice_test_commit``) and RabbitMQ.

Nothing is skipped: if PostgreSQL or RabbitMQ cannot be reached, the fixtures raise and every
test here fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from services.commit.handler import Deps, handle
from services.commit.main import build
from services.commit.repository import FileRepository
from shared.adapters import broker
from shared.adapters.db import create_pool
from shared.adapters.spool import LocalSpool
from shared.errors import DatabaseUnavailable, ForgedEvent
from shared.events import (
    BaseEvent,
    FileCommitted,
    FileCorrupted,
    FileDeadLettered,
    FileFallback,
    FileReceived,
    FileRejected,
    FileScanned,
    FileStored,
    FileThumbnailed,
    Thumbnail,
    parse_event,
)
from shared.naming import object_key, thumbnail_key
from shared.retry import HEADER_ERROR_TYPE
from shared.runner import StageConsumer
from shared.settings import DatabaseSettings
from shared.topology import Topology
from tests.localenv import FreshDatabase, Local

pytestmark = pytest.mark.integration

DATA = b"\xff\xd8\xff\xe0 not really a jpeg"
#: Sluice's own bucket, for the commit stage (the run loop's settings name it too).
BUCKET = "sluice-test"


def thumbs(key: str) -> tuple[Thumbnail, ...]:
    """Two thumbnails next to the original at ``key``."""
    return (
        Thumbnail(size_px=256, key=thumbnail_key(key, 256), width=256, height=171, size_bytes=9000),
        Thumbnail(
            size_px=1024, key=thumbnail_key(key, 1024), width=1024, height=683, size_bytes=70000
        ),
    )


@pytest.fixture(scope="module")
async def database(fresh_database: FreshDatabase) -> DatabaseSettings:
    """A fresh ``sluice_test_commit`` database at the current schema."""
    return await fresh_database("sluice_test_commit")


@pytest.fixture(scope="module")
async def pool(database: DatabaseSettings) -> AsyncIterator[Any]:
    pool = await create_pool(database)
    yield pool
    await pool.close()


@pytest.fixture
def spool(tmp_path: Path) -> LocalSpool:
    return LocalSpool(tmp_path / "spool")


@pytest.fixture
def deps(pool: Any, spool: LocalSpool) -> Deps:
    return Deps(repository=FileRepository(pool), spool=spool, bucket=BUCKET)


async def spooled(spool: LocalSpool, data: bytes = DATA, owner: str = "alice") -> FileReceived:
    """A file spooled as the gateway spools it, under its file id, and its ``file.received``."""
    file_id = uuid.uuid4()
    async with spool.writer(str(file_id)) as writer:
        await writer.write(data)
        await writer.commit()
    return received(spool.reference(str(file_id)), data, file_id=file_id, owner=owner)


def received(
    source: str, data: bytes = DATA, *, file_id: uuid.UUID | None = None, owner: str = "alice"
) -> FileReceived:
    return FileReceived.new(
        file_id=file_id or uuid.uuid4(),
        owner=owner,
        source=source,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="image/jpeg",
        original_name="cat.jpg",
        kind="photo",
        metadata={"album": "holidays", "tags": ["cat"]},
    )


def chain(
    first: FileReceived, **thumbnailed: Any
) -> tuple[FileScanned, FileStored, FileThumbnailed]:
    scanned = first.follow(FileScanned, scanner="ClamAV 1.0.9", signature_version="27431/Oct 1")
    key = object_key(first.owner, first.file_id, first.received_at, first.original_name)
    stored = scanned.follow(FileStored, bucket=BUCKET, key=key)
    thumbnailed.setdefault("thumbnails", thumbs(key))
    done = stored.follow(FileThumbnailed, bucket=stored.bucket, key=stored.key, **thumbnailed)
    return scanned, stored, done


async def handle_all(events: list[BaseEvent], deps: Deps) -> list[BaseEvent]:
    out: list[BaseEvent] = []
    for event in events:
        out += await handle(event, deps)
    return out


async def state(pool: Any, file_id: uuid.UUID) -> tuple[Any, list[Any], list[Any]]:
    """(files row, file_versions rows, file_events rows in order) of one file."""
    file = await pool.fetchrow("SELECT * FROM files WHERE file_id = $1", file_id)
    versions = await pool.fetch("SELECT * FROM file_versions WHERE file_id = $1", file_id)
    history = await pool.fetch(
        "SELECT * FROM file_events WHERE file_id = $1 ORDER BY occurred_at, recorded_at", file_id
    )
    return file, versions, history


async def test_happy_sequence_commits_an_available_file(
    pool: Any, deps: Deps, spool: LocalSpool
) -> None:
    first = await spooled(spool)
    scanned, stored, done = chain(first)
    out = await handle_all([first, scanned, stored, done], deps)

    assert len(out) == 1 and isinstance(out[0], FileCommitted)
    assert (out[0].status, out[0].causation_id) == ("available", done.event_id)
    file, versions, history = await state(pool, first.file_id)
    assert (file["status"], file["status_reason"], file["owner"]) == ("available", None, "alice")
    assert file["metadata"] == {"album": "holidays", "tags": ["cat"]}
    assert file["kind"] == "photo" and file["original_name"] == "cat.jpg"
    [version] = versions
    assert version["status"] == "available" and version["sha256"] == first.sha256
    assert (version["bucket"], version["object_key"]) == (BUCKET, stored.key)
    assert (version["scanner"], version["signature_version"]) == ("ClamAV 1.0.9", "27431/Oct 1")
    assert version["thumbnails"] == [t.model_dump(mode="json") for t in thumbs(stored.key)]
    assert version["thumbnail_error"] is None
    assert [row["event_type"] for row in history] == [
        "file.received",
        "file.scanned",
        "file.stored",
        "file.thumbnailed",
        "file.committed",
    ]
    assert history[1]["detail"] == "ClamAV 1.0.9 / 27431/Oct 1"
    assert history[4]["event_id"] == out[0].event_id
    assert history[4]["payload"] == out[0].model_dump(mode="json")
    assert not await spool.exists(first.source)


async def test_rejected_file(pool: Any, deps: Deps, spool: LocalSpool) -> None:
    first = await spooled(spool)
    rejected = first.follow(
        FileRejected, reason="infected", detail="FOUND", signature="Eicar-Test-Signature"
    )
    out = await handle_all([first, rejected], deps)

    assert [(e.type, getattr(e, "status", None)) for e in out] == [("file.committed", "rejected")]
    file, [version], history = await state(pool, first.file_id)
    assert (file["status"], file["status_reason"]) == ("rejected", "infected: Eicar-Test-Signature")
    assert (version["rejection_reason"], version["signature"]) == (
        "infected",
        "Eicar-Test-Signature",
    )
    assert [(r["event_type"], r["detail"]) for r in history] == [
        ("file.received", f"received: {len(DATA)} bytes, image/jpeg"),
        ("file.rejected", "infected: Eicar-Test-Signature"),
        ("file.committed", "committed: rejected"),
    ]
    assert not await spool.exists(first.source)


async def test_duplicate_changes_nothing_and_re_emits_the_same_commit(
    pool: Any, deps: Deps, spool: LocalSpool
) -> None:
    first = await spooled(spool)
    scanned, stored, done = chain(first)
    [committed] = await handle_all([first, scanned, stored, done], deps)
    before = await state(pool, first.file_id)

    assert await handle(scanned, deps) == []
    [again] = await handle(done, deps)
    assert again == committed  # same event_id, same occurred_at: the recorded one
    assert await state(pool, first.file_id) == before  # no history row, no updated_at change


async def test_out_of_order_still_ends_available(pool: Any, deps: Deps, spool: LocalSpool) -> None:
    first = await spooled(spool)
    scanned, stored, done = chain(first)
    out = await handle_all([done, stored, scanned, first], deps)

    assert [e.type for e in out] == ["file.committed"]
    file, [version], history = await state(pool, first.file_id)
    assert file["status"] == version["status"] == "available"
    assert version["scanner"] == "ClamAV 1.0.9" and version["object_key"] == stored.key
    assert len(version["thumbnails"]) == 2
    assert len(history) == 5
    assert not await spool.exists(first.source)


async def test_terminal_status_never_regresses(pool: Any, deps: Deps, spool: LocalSpool) -> None:
    first = await spooled(spool)
    rejected = first.follow(FileRejected, reason="invalid", detail="content is not image/jpeg")
    scanned, stored, _ = chain(first)
    await handle_all([first, rejected, scanned, stored], deps)

    file, [version], history = await state(pool, first.file_id)
    assert (file["status"], version["status"]) == ("rejected", "rejected")
    assert file["status_reason"] == "invalid: content is not image/jpeg"
    assert version["bucket"] == BUCKET  # the late event's facts are kept, its status is not
    assert len(history) == 5


async def test_thumbnail_error_is_recorded(pool: Any, deps: Deps, spool: LocalSpool) -> None:
    first = await spooled(spool)
    scanned, stored, done = chain(first, thumbnails=(), thumbnail_error="image file is truncated")
    await handle_all([first, scanned, stored, done], deps)

    file, [version], history = await state(pool, first.file_id)
    assert file["status"] == "available"
    assert (version["thumbnails"], version["thumbnail_error"]) == ([], "image file is truncated")
    assert history[3]["detail"] == "no thumbnails: image file is truncated"


async def test_same_event_concurrently_is_recorded_once(
    pool: Any, deps: Deps, spool: LocalSpool
) -> None:
    first = await spooled(spool)
    scanned, stored, done = chain(first)
    await handle_all([first, scanned, stored], deps)

    results = await asyncio.gather(*(handle(done, deps) for _ in range(5)))
    assert len({out[0].event_id for out in results}) == 1
    rows = await pool.fetchval(
        "SELECT count(*) FROM file_events WHERE event_id = ANY($1::uuid[])",
        [done.event_id, results[0][0].event_id],
    )
    assert rows == 2


async def test_events_of_one_file_concurrently_end_available(pool: Any, deps: Deps) -> None:
    first = received("s3://upstream/alice/cat.jpg")
    scanned, stored, done = chain(first)
    await asyncio.gather(*(handle(e, deps) for e in (done, stored, scanned, first)))

    file, [version], history = await state(pool, first.file_id)
    assert file["status"] == version["status"] == "available"
    assert len(history) == 5


async def test_connection_lost_mid_transaction_rolls_back_and_is_retryable(
    pool: Any, deps: Deps, spool: LocalSpool
) -> None:
    first = await spooled(spool)
    scanned, _, _ = chain(first)
    await handle(first, deps)
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("SELECT 1 FROM files WHERE file_id = $1 FOR UPDATE", first.file_id)
        attempt = asyncio.create_task(handle(scanned, deps))
        waiting = None
        for _ in range(200):  # the handler's backend, waiting for the row lock
            waiting = await pool.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = 'sluice_test_commit' AND query LIKE '%FOR UPDATE%'"
            )
            if waiting is not None:
                break
            await asyncio.sleep(0.02)
        assert waiting is not None
        await pool.execute("SELECT pg_terminate_backend($1)", waiting)
        with pytest.raises(DatabaseUnavailable) as caught:
            await attempt
    assert caught.value.context == {
        "file_id": str(first.file_id),
        "event_id": str(scanned.event_id),
    }
    assert await handle(scanned, deps) == []  # rolled back, so not a duplicate: applied now
    file, _, history = await state(pool, first.file_id)
    assert file["status"] == "scanned" and len(history) == 2


async def test_closed_pool_is_database_unavailable(
    database: DatabaseSettings, spool: LocalSpool
) -> None:
    closed = await create_pool(database)
    await closed.close()
    with pytest.raises(DatabaseUnavailable, match="PostgreSQL unavailable"):
        await handle(
            received("spool://x"),
            Deps(repository=FileRepository(closed), spool=spool, bucket=BUCKET),
        )


async def next_message(queue: AbstractQueue, timeout_s: float = 15.0) -> AbstractIncomingMessage:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (message := await queue.get(no_ack=True, fail=False)) is None:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no message on {queue.name} within {timeout_s} s")
        await asyncio.sleep(0.05)
    return message


async def test_through_the_run_loop(
    pool: Any, database: DatabaseSettings, local: Local, tmp_path: Path
) -> None:
    amqp = local.amqp("t_commit", retry_base_delay_s=0.05, retry_max_delay_s=0.2)
    topology = Topology(prefix="t_commit", delivery_limit=amqp.delivery_limit)
    settings = local.settings(tmp_path / "spool", amqp=amqp, database=database)
    connection = await broker.connect(amqp)
    channel = await connection.channel()
    await topology.delete(channel)
    try:
        publisher = await broker.Publisher.create(connection, amqp, topology)
        committed_queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await committed_queue.bind(topology.exchange, FileCommitted.routing_key)
        dead_letters = await channel.get_queue(topology.dead_letter_queue("commit"))

        consumer = StageConsumer(await build(settings), amqp, topology)
        await consumer.start()
        try:
            spool = LocalSpool(settings.spool.dir)
            first = await spooled(spool)
            scanned, stored, done = chain(first)
            for event in (first, scanned, stored, done):
                await publisher.publish(event)
            committed = parse_event((await next_message(committed_queue)).body)
            assert isinstance(committed, FileCommitted)
            assert (committed.status, committed.causation_id) == ("available", done.event_id)
            assert (
                await pool.fetchval("SELECT status FROM files WHERE file_id = $1", first.file_id)
                == "available"
            )
            assert not await spool.exists(first.source)

            await publisher.publish_to_queue(
                topology.queue("commit"), aio_pika.Message(b"{not json", message_id="junk")
            )
            valid = received("s3://upstream/alice/dog.jpg")
            await publisher.publish(valid)
            dead = await next_message(dead_letters)
            assert dead.body == b"{not json"
            assert (dead.headers or {})[HEADER_ERROR_TYPE] == "InvalidEvent"
            for _ in range(100):
                status = await pool.fetchval(
                    "SELECT status FROM files WHERE file_id = $1", valid.file_id
                )
                if status is not None:
                    break
                await asyncio.sleep(0.05)
            assert status == "received"
        finally:
            await consumer.stop()
    finally:
        await topology.delete(channel)
        await connection.close()


async def test_fallback_then_migration_then_corruption(
    pool: Any, deps: Deps, spool: LocalSpool
) -> None:
    first = await spooled(spool)
    scanned, stored, done = chain(first)
    fallback = scanned.follow(FileFallback, reason="StorageUnavailable after 3 attempts: down")

    assert await handle_all([first, scanned, fallback], deps) == []
    file, [version], _ = await state(pool, first.file_id)
    assert (file["status"], version["status"]) == ("fallback", "fallback")
    assert file["status_reason"] == (
        "kept in PostgreSQL until S3 is back: StorageUnavailable after 3 attempts: down"
    )
    assert await spool.exists(first.source)  # not final: the spool keeps the bytes

    [committed] = await handle_all([stored, done], deps)
    assert isinstance(committed, FileCommitted) and committed.status == "available"
    file, [version], history = await state(pool, first.file_id)
    assert (file["status"], file["status_reason"]) == ("available", None)
    assert {row["event_type"] for row in history} >= {"file.fallback", "file.stored"}

    lost = FileCorrupted.about(
        {
            "file_id": first.file_id,
            "owner": first.owner,
            "received_at": first.received_at,
            "source": first.source,
            "size_bytes": first.size_bytes,
            "sha256": first.sha256,
            "content_type": first.content_type,
            "original_name": first.original_name,
        },
        bucket=stored.bucket,
        key=stored.key,
        detail="object missing (reconcile)",
    )
    assert await handle_all([lost, lost], deps) == []  # no second file.committed
    file, [version], history = await state(pool, first.file_id)
    assert (file["status"], version["status"]) == ("corrupted", "corrupted")
    assert file["status_reason"] == (
        f"object s3://{stored.bucket}/{stored.key} lost: object missing (reconcile)"
    )
    assert [row["event_type"] for row in history].count("file.corrupted") == 1


# -- what the commit stage checks of an event (shared.claims) ----------------------------------


def forged(event: BaseEvent, **fields: Any) -> BaseEvent:
    """``event`` with ``fields`` replaced, as anyone on the bus could publish it."""
    return parse_event(event.model_copy(update=fields).model_dump_json().encode())


async def test_stored_naming_another_owners_key_is_refused_and_changes_nothing(
    pool: Any, deps: Deps, spool: LocalSpool
) -> None:
    alice = await spooled(spool)
    _, alices_stored, _ = chain(alice)
    await handle_all([alice, *chain(alice)], deps)
    before = await state(pool, alice.file_id)

    mallory = received("s3://upstream/mallory/x.jpg", owner="mallory")
    scanned = mallory.follow(FileScanned, scanner="ClamAV 1.0.9", signature_version="1")
    await handle_all([mallory, scanned], deps)
    theft = scanned.follow(FileStored, bucket=BUCKET, key=alices_stored.key)
    with pytest.raises(ForgedEvent) as caught:
        await handle(theft, deps)
    assert f"of owner 'mallory' names key '{alices_stored.key}'" in str(caught.value)

    file, [version], history = await state(pool, mallory.file_id)
    assert (file["status"], version["object_key"], version["bucket"]) == ("scanned", None, None)
    assert [row["event_type"] for row in history] == ["file.received", "file.scanned"]
    assert await state(pool, alice.file_id) == before


async def test_stored_in_a_foreign_bucket_is_refused(pool: Any, deps: Deps) -> None:
    first = received("s3://upstream/alice/cat.jpg")
    _, stored, _ = chain(first)
    elsewhere = forged(stored, bucket="upstream")
    with pytest.raises(ForgedEvent, match="names bucket 'upstream', not Sluice's bucket"):
        await handle(elsewhere, deps)
    assert await pool.fetchval("SELECT count(*) FROM files WHERE file_id = $1", first.file_id) == 0


async def test_thumbnails_not_next_to_the_original_are_refused(pool: Any, deps: Deps) -> None:
    first = received("s3://upstream/alice/cat.jpg")
    _, _, done = chain(first, thumbnails=thumbs("bob/holiday.jpg"))
    with pytest.raises(ForgedEvent) as caught:
        await handle(done, deps)
    assert "names thumbnail key 'bob/holiday.jpg.thumb-256.webp'" in str(caught.value)
    assert await pool.fetchval("SELECT count(*) FROM files WHERE file_id = $1", first.file_id) == 0


async def test_events_of_another_owner_change_nothing_of_the_file(
    pool: Any, deps: Deps, spool: LocalSpool
) -> None:
    alice = await spooled(spool)
    scanned, _, _ = chain(alice)
    await handle_all([alice, scanned], deps)
    before = await state(pool, alice.file_id)

    rename = FileReceived.new(
        **{
            **alice.model_dump(exclude={"type", "event_id", "occurred_at", "received_at"}),
            "owner": "mallory",
            "original_name": "mine.jpg",
            "content_type": "text/html",
            "metadata": {"owner": "mallory"},
            "version_number": 2,
        }
    )
    reject = forged(
        alice.follow(FileRejected, reason="invalid", detail="x", version_number=2),
        owner="mallory",
    )
    # alice's own event, redelivered with another owner: the duplicate path checks too.
    replayed = forged(scanned, owner="mallory")
    for event in (rename, reject, replayed):
        with pytest.raises(ForgedEvent) as caught:
            await handle(event, deps)
        assert "of owner 'mallory' is about a file of owner 'alice'" in str(caught.value)
    assert await state(pool, alice.file_id) == before
    assert await spool.exists(alice.source)


async def test_a_dead_letter_notice_of_another_owner_marks_nothing(
    pool: Any, deps: Deps, spool: LocalSpool
) -> None:
    alice = await spooled(spool)
    await handle(alice, deps)
    before = await state(pool, alice.file_id)
    notice = FileDeadLettered.about(
        forged(alice, owner="mallory"),
        stage="thumbnail",
        error_type="ForgedEvent",
        error_message="file.stored names bucket 'elsewhere'",
        attempts=1,
        failed_at=alice.occurred_at,
    )
    with pytest.raises(ForgedEvent, match="of owner 'mallory' is about a file of owner 'alice'"):
        await handle(notice, deps)
    assert await state(pool, alice.file_id) == before
    assert before[0]["attention"] is None


async def test_a_rejection_naming_another_files_spool_entry_deletes_nothing(
    pool: Any, deps: Deps, spool: LocalSpool
) -> None:
    alice = await spooled(spool)  # in flight: received, not final
    await handle(alice, deps)
    mallory = received(alice.source, owner="mallory")
    rejected = mallory.follow(FileRejected, reason="invalid", detail="whatever")
    [committed] = await handle_all([mallory, rejected], deps)
    assert isinstance(committed, FileCommitted) and committed.status == "rejected"
    assert await spool.exists(alice.source)  # alice's bytes are still there
    file, _, _ = await state(pool, alice.file_id)
    assert (file["owner"], file["status"]) == ("alice", "received")
