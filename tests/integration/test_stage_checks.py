"""What the stages check of the events they are told, with the four stages running against the
real RabbitMQ, PostgreSQL, SeaweedFS and clamd (database ``sluice_test_stage_checks``, buckets
``sluice-stage-checks`` and, for upstream services, ``sluice-stage-checks-up``).

An upstream service's ``file.received`` meets the upload policy in the scan stage, and the
content type that ends on the object and in ``files`` is the sniffed one; events that name what
their owner does not own are dead-lettered as ``ForgedEvent`` and change nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel

from shared import runner
from shared.adapters import broker
from shared.events import BaseEvent, FileReceived, FileScanned, FileStored
from shared.naming import object_key, thumbnail_key
from shared.retry import HEADER_ERROR_MESSAGE, HEADER_ERROR_TYPE
from shared.settings import Settings, ThumbnailSettings
from shared.topology import STAGES, Topology
from tests.localenv import FreshBucket, FreshDatabase, Local

pytestmark = pytest.mark.integration

PREFIX = "t_stage_checks"
DATABASE = "sluice_test_stage_checks"
BUCKET = "sluice-stage-checks"
UPSTREAM = "sluice-stage-checks-up"
SAMPLES = Path(__file__).resolve().parents[2] / "samples"
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"


@dataclass
class Pipeline:
    settings: Settings
    pool: asyncpg.Pool
    publisher: broker.Publisher
    channel: AbstractChannel
    topology: Topology
    raw_s3: Any


@pytest.fixture(scope="module")
async def pipeline(
    local: Local,
    fresh_database: FreshDatabase,
    fresh_bucket: FreshBucket,
    raw_s3: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Pipeline]:
    """The scan, store, thumbnail and commit stages of ``t_stage_checks``, in this process."""
    settings = local.settings(
        tmp_path_factory.mktemp("spool"),
        amqp=local.amqp(PREFIX, retry_base_delay_s=0.05, retry_max_delay_s=0.2),
        database=local.database(DATABASE),
        s3=local.s3(fresh_bucket(BUCKET), timeout_s=10.0, upstream_buckets=(UPSTREAM,)),
        thumbnail=ThumbnailSettings(sizes_px=(64,)),
    )
    fresh_bucket(UPSTREAM)
    await fresh_database(DATABASE)
    topology = Topology.of(settings.amqp)
    connection = await broker.connect(settings.amqp)
    channel = await connection.channel()
    await topology.delete(channel)
    await topology.declare(channel)
    publisher = await broker.Publisher.create(connection, settings.amqp, topology)
    stages = [
        await importlib.import_module(f"services.{name}.main").build(settings) for name in STAGES
    ]
    stop = asyncio.Event()
    consumers = asyncio.create_task(runner.run_until_stopped(stages, settings.amqp, topology, stop))
    pool = await asyncpg.create_pool(settings.database.url, min_size=1, max_size=2)
    try:
        yield Pipeline(settings, pool, publisher, channel, topology, raw_s3)
    finally:
        stop.set()
        await consumers
        await pool.close()
        await topology.delete(channel)
        await connection.close()


async def wait_until(
    condition: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 60.0
) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not (result := await condition()):
        assert asyncio.get_running_loop().time() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.1)
    return result


async def upstream_file(
    pipeline: Pipeline, data: bytes, name: str, content_type: str, owner: str = "alice"
) -> FileReceived:
    """What an upstream service does: write the bytes to its bucket, announce them."""
    file_id = uuid.uuid4()
    key = f"incoming/{file_id}"
    pipeline.raw_s3.put_object(Bucket=UPSTREAM, Key=key, Body=data)
    event = FileReceived.new(
        file_id=file_id,
        owner=owner,
        source=f"s3://{UPSTREAM}/{key}",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=content_type,
        original_name=name,
    )
    await pipeline.publisher.publish(event)
    return event


async def final_row(pipeline: Pipeline, file_id: uuid.UUID) -> asyncpg.Record:
    async def final() -> asyncpg.Record | None:
        row: asyncpg.Record | None = await pipeline.pool.fetchrow(
            "SELECT f.owner, f.status, f.status_reason, f.content_type, f.original_name,"
            " v.bucket, v.object_key, v.rejection_reason, v.thumbnails"
            " FROM files f JOIN file_versions v USING (file_id)"
            " WHERE file_id = $1 AND f.status IN ('available', 'rejected')",
            file_id,
        )
        return row

    row: asyncpg.Record = await wait_until(final, f"file {file_id} final")
    return row


async def dead_letter(pipeline: Pipeline, stage: str, event: BaseEvent) -> dict[str, Any]:
    """The headers of ``event``'s dead letter in ``stage``'s dead-letter queue (waited for;
    other dead letters are put back)."""
    queue = await pipeline.channel.get_queue(pipeline.topology.dead_letter_queue(stage))

    async def found() -> dict[str, Any] | None:
        others, headers = [], None
        while headers is None and (message := await queue.get(no_ack=False, fail=False)):
            if message.message_id == str(event.event_id):
                headers = dict(message.headers or {})
                await message.ack()
            else:
                others.append(message)
        for other in others:
            await other.nack(requeue=True)
        return headers

    headers: dict[str, Any] = await wait_until(found, f"{event.type} in {stage}'s dead letters")
    return headers


def keys(pipeline: Pipeline, prefix: str) -> list[str]:
    listing = pipeline.raw_s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


# -- one policy for every way in -------------------------------------------------------------


async def test_an_upstream_html_file_named_jpg_is_rejected_by_the_policy(
    pipeline: Pipeline,
) -> None:
    event = await upstream_file(pipeline, HTML, "cat.jpg", "image/jpeg")
    row = await final_row(pipeline, event.file_id)
    assert (row["status"], row["rejection_reason"]) == ("rejected", "policy")
    assert row["status_reason"] == (
        "policy: content sniffed as text/html, which is not an accepted type (the name claims .jpg)"
    )
    assert row["content_type"] == "text/html"  # what the bytes are, not the claim
    assert row["object_key"] is None
    assert keys(pipeline, f"alice/{event.file_id}") == []
    # The upstream object is the upstream service's: left alone.
    assert pipeline.raw_s3.get_object(Bucket=UPSTREAM, Key=f"incoming/{event.file_id}")


async def test_an_upstream_file_with_a_lying_content_type_ends_with_the_sniffed_one(
    pipeline: Pipeline,
) -> None:
    data = (SAMPLES / "photo.png").read_bytes()
    event = await upstream_file(pipeline, data, "photo.png", "text/html")
    row = await final_row(pipeline, event.file_id)
    assert (row["status"], row["content_type"]) == ("available", "image/png")
    head = pipeline.raw_s3.head_object(Bucket=BUCKET, Key=row["object_key"])
    assert head["ContentType"] == "image/png"  # what a download is served as
    history = await pipeline.pool.fetch(
        "SELECT payload->>'content_type' FROM file_events WHERE file_id = $1"
        " AND event_type = 'file.scanned'",
        event.file_id,
    )
    assert [r[0] for r in history] == ["image/png"]


# -- stages check what they are told ----------------------------------------------------------


async def alices_available_file(pipeline: Pipeline) -> tuple[FileReceived, asyncpg.Record]:
    data = (SAMPLES / "photo.png").read_bytes()
    alice = await upstream_file(pipeline, data, "holiday.png", "image/png")
    row = await final_row(pipeline, alice.file_id)
    assert row["status"] == "available"
    return alice, row


async def test_a_stored_event_naming_another_owners_key_is_dead_lettered_and_changes_nothing(
    pipeline: Pipeline,
) -> None:
    alice, before = await alices_available_file(pipeline)
    objects_before = keys(pipeline, "")
    # mallory announces a file of her own, then claims it is stored at alice's key.
    mallory = FileReceived.new(
        **{
            **alice.model_dump(exclude={"type", "event_id", "occurred_at", "received_at"}),
            "file_id": uuid.uuid4(),
            "owner": "mallory",
        }
    )
    theft = mallory.follow(FileScanned, scanner="x", signature_version="x").follow(
        FileStored, bucket=BUCKET, key=before["object_key"]
    )
    await pipeline.publisher.publish(theft)  # routed to the thumbnail and commit stages

    for stage in ("thumbnail", "commit"):
        headers = await dead_letter(pipeline, stage, theft)
        assert headers[HEADER_ERROR_TYPE] == "ForgedEvent"
        assert (
            f"file.stored of owner 'mallory' names key '{before['object_key']}', not the file's "
            f"key 'mallory/{mallory.file_id}-" in str(headers[HEADER_ERROR_MESSAGE])
        )
    assert await final_row(pipeline, alice.file_id) == before
    owned = await pipeline.pool.fetchval(
        "SELECT count(*) FROM file_versions WHERE object_key = $1", before["object_key"]
    )
    assert owned == 1  # alice's version only; mallory's file records no object
    assert keys(pipeline, "") == objects_before  # nothing written next to alice's object


async def test_a_thumbnail_job_in_a_foreign_bucket_is_dead_lettered(pipeline: Pipeline) -> None:
    data = (SAMPLES / "photo.png").read_bytes()
    event = FileReceived.new(
        file_id=uuid.uuid4(),
        owner="alice",
        source=f"s3://{UPSTREAM}/elsewhere.png",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="image/png",
        original_name="elsewhere.png",
    )
    key = object_key(event.owner, event.file_id, event.received_at, event.original_name)
    pipeline.raw_s3.put_object(Bucket=UPSTREAM, Key=key, Body=data)
    job = event.follow(FileScanned, scanner="x", signature_version="x").follow(
        FileStored, bucket=UPSTREAM, key=key
    )
    await pipeline.publisher.publish_to_queue(
        pipeline.topology.queue("thumbnail"), broker.event_message(job)
    )
    headers = await dead_letter(pipeline, "thumbnail", job)
    assert headers[HEADER_ERROR_TYPE] == "ForgedEvent"
    assert f"names bucket '{UPSTREAM}', not Sluice's bucket '{BUCKET}'" in str(
        headers[HEADER_ERROR_MESSAGE]
    )
    listing = pipeline.raw_s3.list_objects_v2(Bucket=UPSTREAM, Prefix=thumbnail_key(key, 64))
    assert listing.get("KeyCount", 0) == 0  # no thumbnail written next to it


async def test_an_event_of_another_owner_about_alices_file_changes_nothing(
    pipeline: Pipeline,
) -> None:
    alice, before = await alices_available_file(pipeline)
    attention_before = await pipeline.pool.fetchval(
        "SELECT attention FROM files WHERE file_id = $1", alice.file_id
    )
    # A second version of alice's file, claimed by mallory, with its own name and metadata.
    claim = FileReceived.new(
        **{
            **alice.model_dump(exclude={"type", "event_id", "occurred_at"}),
            "owner": "mallory",
            "original_name": "mine.png",
            "metadata": {"stolen": True},
            "version_number": 2,
        }
    )
    await pipeline.publisher.publish_to_queue(
        pipeline.topology.queue("commit"), broker.event_message(claim)
    )
    headers = await dead_letter(pipeline, "commit", claim)
    assert headers[HEADER_ERROR_TYPE] == "ForgedEvent"
    assert "of owner 'mallory' is about a file of owner 'alice'" in str(
        headers[HEADER_ERROR_MESSAGE]
    )
    assert await final_row(pipeline, alice.file_id) == before
    assert (
        await pipeline.pool.fetchval(
            "SELECT attention FROM files WHERE file_id = $1", alice.file_id
        )
        == attention_before
    )
    owners = await pipeline.pool.fetch(
        "SELECT DISTINCT payload->>'owner' FROM file_events WHERE file_id = $1", alice.file_id
    )
    assert [row[0] for row in owners] == ["alice"]  # nothing of mallory's in alice's history
