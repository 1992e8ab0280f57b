"""Dead letters from the real stage processes (scan, store, thumbnail, commit as their own OS
processes, prefix and database ``t_dlq_stages``): a job failed on purpose in each stage lands
in that stage's dead-letter queue with its error; a replay done twice (the same dead letter
replayed again, as a replay killed between its confirm and its ack leaves it) processes the
file once; a purge is recorded in the file's history by the commit stage."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from PIL import Image

from shared.adapters import broker
from shared.events import FileReceived, FileScanned, FileStored
from shared.naming import object_key
from shared.ops.deadletters import DeadLetter, list_dead_letters, show_dead_letter
from shared.settings import AmqpSettings
from shared.topology import Topology
from tests.faults.cluster import WORKERS, Cluster

pytestmark = pytest.mark.faults

AMQP = AmqpSettings(prefix="t_dlq_stages")
TOPOLOGY = Topology.of(AMQP)


@pytest.fixture
def cluster(services: object, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, "t_dlq_stages")
    cluster.prepare()
    for name in WORKERS:
        cluster.start(name)
    cluster.wait_ready(WORKERS)
    yield cluster
    codes = cluster.stop_all()
    assert set(codes.values()) == {0}, codes


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 90)).save(out, format="PNG")
    return out.getvalue()


def described(data: bytes, source: str) -> dict[str, Any]:
    return {
        "file_id": uuid.uuid4(),
        "owner": "alice",
        "source": source,
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_type": "image/png",
        "original_name": "photo.png",
    }


async def publish(*messages: tuple[str, aio_pika.Message]) -> None:
    connection = await broker.connect(AMQP)
    try:
        publisher = await broker.Publisher.create(connection, AMQP, TOPOLOGY)
        for routing_key, message in messages:
            await publisher.publish_to_exchange(TOPOLOGY.exchange, routing_key, message)
    finally:
        await connection.close()


async def dead_letters() -> list[DeadLetter]:
    connection = await broker.connect(AMQP)
    try:
        return await list_dead_letters(connection, TOPOLOGY)
    finally:
        await connection.close()


async def copy_dead_letter(message_id: str, stage: str) -> None:
    """Put a second copy of a dead letter in its queue, headers and all."""
    connection = await broker.connect(AMQP)
    try:
        shown = await show_dead_letter(connection, TOPOLOGY, message_id)
        assert shown is not None
        headers = {k: v for k, v in shown.headers.items() if not k.startswith("x-delivery")}
        copy = aio_pika.Message(
            json.dumps(shown.body).encode(),
            headers=headers,
            message_id=message_id,
            type=shown.properties.get("type"),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        publisher = await broker.Publisher.create(connection, AMQP, TOPOLOGY)
        await publisher.publish_to_exchange(TOPOLOGY.dead_letter_exchange, stage, copy)
    finally:
        await connection.close()


async def copy_dead_letter_after_replay(cluster: Cluster, job: FileReceived) -> None:
    """Dead-letter ``job`` again by hand and replay it with the CLI."""
    connection = await broker.connect(AMQP)
    try:
        publisher = await broker.Publisher.create(connection, AMQP, TOPOLOGY)
        headers = {"x-sluice-stage": "scan", "x-sluice-error-type": "SourceMissing"}
        await publisher.publish_to_exchange(
            TOPOLOGY.dead_letter_exchange, "scan", broker.event_message(job, headers)
        )
    finally:
        await connection.close()
    out = await asyncio.to_thread(cluster.cli, "dlq", "replay", "--stage", "scan")
    assert "replayed 1 dead letter(s)" in out


def wait_until(condition: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not true within {timeout_s} s: {condition.__name__}"
        time.sleep(0.3)


def history(cluster: Cluster, file_id: uuid.UUID) -> list[tuple[str, str]]:
    return [
        (row[0], row[1] or "")
        for row in cluster.sql(
            "SELECT event_type, detail FROM file_events WHERE file_id = %s ORDER BY occurred_at",
            file_id,
        )
    ]


def status(cluster: Cluster, file_id: uuid.UUID) -> str | None:
    rows = cluster.sql("SELECT status FROM files WHERE file_id = %s", file_id)
    return str(rows[0][0]) if rows else None


def handled(cluster: Cluster, stage: str, event_id: str) -> list[str]:
    """Outcomes of the ``message handled`` lines of ``stage`` about ``event_id``."""
    outcomes = []
    for line in cluster.log_tail(stage, 2_000_000).splitlines():
        if event_id in line and '"message handled"' in line:
            outcomes.append(json.loads(line)["outcome"])
    return outcomes


def test_each_stage_dead_letters_then_replay_twice_processes_once_and_purge_is_recorded(
    cluster: Cluster,
) -> None:
    data = png()
    cluster.spool_dir.mkdir(parents=True, exist_ok=True)
    # scan: the spooled bytes are not there (yet).
    scan_name = f"{uuid.uuid4().hex}.png"
    scan_job = FileReceived.new(**described(data, f"spool://{scan_name}"))
    # store: the bytes are there, but the event announces another SHA-256.
    store_name = f"{uuid.uuid4().hex}.png"
    (cluster.spool_dir / store_name).write_bytes(data)
    store_job = FileReceived.new(**described(data, f"spool://{store_name}")).follow(
        FileScanned, scanner="ClamAV test", signature_version="1", sha256="1" * 64
    )
    # thumbnail: the object it should read is not in the bucket.
    gone = FileReceived.new(**described(data, "spool://gone.png"))
    not_there = object_key(gone.owner, gone.file_id, gone.received_at, gone.original_name)
    thumbnail_job = gone.follow(FileStored, bucket=cluster.bucket, key=not_there)
    # commit: an event of a contract version it does not know.
    future = json.loads(FileReceived.new(**described(data, "spool://x.png")).model_dump_json())
    future.update(type="file.rejected", schema_version=2, reason="invalid", detail="v2")
    future_id = str(uuid.uuid4())
    asyncio.run(
        publish(
            ("file.received", broker.event_message(scan_job)),
            ("file.scanned", broker.event_message(store_job)),
            ("file.stored", broker.event_message(thumbnail_job)),
            (
                "file.rejected",
                aio_pika.Message(json.dumps(future).encode(), message_id=future_id),
            ),
        )
    )

    def one_per_stage() -> bool:
        return sorted(letter.stage for letter in asyncio.run(dead_letters())) == sorted(WORKERS)

    wait_until(one_per_stage)
    letters = {letter.stage: letter for letter in asyncio.run(dead_letters())}
    scan, store = letters["scan"], letters["store"]
    thumbnail, commit = letters["thumbnail"], letters["commit"]
    assert (scan.message_id, scan.error_type) == (str(scan_job.event_id), "SourceMissing")
    assert scan.error_message is not None and scan_name in scan.error_message
    assert (store.message_id, store.error_type) == (str(store_job.event_id), "ChecksumMismatch")
    assert "do not match the event's SHA-256" in (store.error_message or "")
    assert (thumbnail.message_id, thumbnail.error_type) == (
        str(thumbnail_job.event_id),
        "SourceMissing",
    )
    assert not_there in (thumbnail.error_message or "")
    assert (commit.message_id, commit.error_type) == (future_id, "InvalidEvent")
    assert "schema_version" in (commit.error_message or "")
    assert all(letter.attempts == 1 for letter in letters.values())  # permanent: no retries

    # The fix: the bytes are spooled. The dead letter is there twice, both replayed at once.
    (cluster.spool_dir / scan_name).write_bytes(data)
    asyncio.run(copy_dead_letter(str(scan_job.event_id), "scan"))
    assert "replayed 2 dead letter(s)" in cluster.cli("dlq", "replay", "scan")
    wait_until(lambda: status(cluster, scan_job.file_id) == "available")
    wait_until(lambda: handled(cluster, "scan", str(scan_job.event_id)).count("acked") == 2)
    # ... and once more after the file is done (its spooled bytes are gone by now).
    asyncio.run(copy_dead_letter_after_replay(cluster, scan_job))
    wait_until(lambda: handled(cluster, "scan", str(scan_job.event_id)).count("acked") == 3)
    time.sleep(1)  # let anything the third delivery caused reach the commit stage

    events = [event_type for event_type, _ in history(cluster, scan_job.file_id)]
    # The dead letter was announced once (file.dead_lettered); its copies were not handled.
    assert sorted(events) == sorted(
        [
            "file.received",
            "file.dead_lettered",
            "file.scanned",
            "file.stored",
            "file.thumbnailed",
            "file.committed",
        ]
    ), events
    assert status(cluster, scan_job.file_id) == "available"
    assert {letter.stage for letter in asyncio.run(dead_letters())} == {
        "store",
        "thumbnail",
        "commit",
    }

    # Purge: refused without --yes; with it, recorded in the file's history, status unmoved.
    assert status(cluster, store_job.file_id) == "scanned"
    out = cluster.cli(
        "dlq", "purge", "store", "--yes", "--reason", "ops: upstream sent a wrong checksum"
    )
    assert "purged 1 dead letter(s), 1 recorded" in out

    def purge_recorded() -> bool:
        return "file.dead_letter_purged" in dict(history(cluster, store_job.file_id))

    wait_until(purge_recorded)
    detail = dict(history(cluster, store_job.file_id))["file.dead_letter_purged"]
    assert "store stage" in detail and "ChecksumMismatch" in detail
    assert detail.endswith("ops: upstream sent a wrong checksum")
    assert status(cluster, store_job.file_id) == "scanned"
    assert {letter.stage for letter in asyncio.run(dead_letters())} == {"thumbnail", "commit"}
