"""Poison messages: each lands in the right dead-letter queue, with the reason, and nothing else
stops.

Messages no stage can ever handle (not JSON, another schema version, missing fields, 5 MB of
garbage, a source that is gone or not allowed) are published straight to the stage queues of a
running ``sluice run`` (default exchange, persistent, publisher confirms), between good uploads
over HTTP. Each must be dead-lettered at once (a ``PermanentError``: one attempt) to
``<prefix>.<stage>.dlq`` with ``x-sluice-error-type`` and a message saying why; images that make
the decoder fail deep inside their pixel data must end ``available`` with a ``thumbnail_error``;
the process stays alive and every good upload ends ``available``.

The crash-loop test shows the last line of defence: a message that kills its consumer process
every time is dead-lettered by the quorum queue's delivery limit (RabbitMQ, not our code).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from shared import devservices
from shared.events import BaseEvent, FileReceived, FileScanned, FileStored
from shared.naming import object_key
from shared.topology import STAGES, Topology
from tests.e2e.pipeline import ROOT, Pipeline, start_pipeline
from tests.faults.checks import REPORTS
from tests.faults.corpus import SAMPLES, corrupt_jpeg_huffman_table, corrupt_png_idat, sample

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
GOOD_SAMPLES = [
    "photo-rotated.jpg",
    "photo.png",
    "animation.gif",
    "photo.webp",
    "photo.heic",
    "document.pdf",
]


@dataclass(frozen=True)
class Poison:
    """A message published straight to ``<prefix>.<stage>`` and where it must end up."""

    message_id: str
    stage: str
    body: bytes
    error_type: str
    says: str  # a fragment x-sluice-error-message must hold


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    message_id: str | None
    headers: dict[str, Any]
    body: bytes


@pytest.fixture(scope="module")
def pipeline(services: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    yield from start_pipeline(tmp_path_factory.mktemp("poison"), "poison")


# --- AMQP helpers -------------------------------------------------------------------------------


async def publish(
    channel: aio_pika.abc.AbstractChannel, queue: str, body: bytes, message_id: str
) -> None:
    """Persistent, mandatory, to ``queue`` through the default exchange; waits for the confirm."""
    message = aio_pika.Message(
        body=body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
    )
    await channel.default_exchange.publish(message, routing_key=queue, mandatory=True, timeout=30)


async def _publish_event(amqp_url: str, queue: str, event: BaseEvent) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await publish(channel, queue, event.model_dump_json().encode(), str(event.event_id))


def publish_event(queue: str, event: BaseEvent, amqp_url: str = AMQP_URL) -> None:
    """Publish ``event`` straight to ``queue`` (persistent, confirmed); message id = event id."""
    asyncio.run(_publish_event(amqp_url, queue, event))


async def _depths(amqp_url: str, names: list[str]) -> dict[str, int]:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        depths = {}
        for name in names:
            queue = await channel.declare_queue(name, passive=True)
            depths[name] = queue.declaration_result.message_count or 0
        return depths


def depths(names: list[str], amqp_url: str = AMQP_URL) -> dict[str, int]:
    """Ready messages in each queue of ``names``."""
    return asyncio.run(_depths(amqp_url, names))


async def _take(amqp_url: str, names: list[str]) -> list[DeadLetter]:
    taken = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            queue = await channel.declare_queue(name, passive=True)
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                headers = dict(message.headers or {})
                taken.append(DeadLetter(name, message.message_id, headers, message.body))
    return taken


def take(names: list[str], amqp_url: str = AMQP_URL) -> list[DeadLetter]:
    """Every message of the queues in ``names`` (basic.get; the test owns them: acked)."""
    return asyncio.run(_take(amqp_url, names))


def wait_idle(names: list[str], timeout_s: float = 60) -> None:
    """Wait until ``names`` are empty on two looks 0.5 s apart (nothing in flight between)."""
    deadline = time.monotonic() + timeout_s
    empty_before = False
    while True:
        found = depths(names)
        empty = not any(found.values())
        if empty and empty_before:
            return
        empty_before = empty
        assert time.monotonic() < deadline, f"not idle after {timeout_s}s: {found}"
        time.sleep(0.5)


# --- the poison -----------------------------------------------------------------------------------


def received(name: str, data: bytes, source: str, content_type: str) -> FileReceived:
    return FileReceived.new(
        file_id=uuid.uuid4(),
        owner="alice",
        source=source,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=content_type,
        original_name=name,
    )


def stored(event: FileReceived, bucket: str, key: str) -> FileStored:
    scanned = event.follow(FileScanned, scanner="test", signature_version="test")
    return scanned.follow(FileStored, bucket=bucket, key=key)


def as_json(event: BaseEvent, **changes: Any) -> bytes:
    """The event's JSON with ``changes`` applied; a field changed to ``...`` is left out."""
    fields = event.model_dump(mode="json")
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def poison_messages(bucket: str) -> list[Poison]:
    """The poison, one or more per stage, in publishing order."""
    png = sample("photo.png")
    gone = received("gone.png", png, f"spool://{uuid.uuid4()}-gone.png", "image/png")
    missing_key = object_key(gone.owner, gone.file_id, gone.received_at, gone.original_name)
    # Another owner's file.stored naming alice's key (shared.claims).
    mallory = received("gone.png", png, gone.source, "image/png").model_copy(
        update={"owner": "mallory"}
    )
    garbage = hashlib.shake_256(b"sluice poison").digest(5 * 1024 * 1024)
    scanned = gone.follow(FileScanned, scanner="test", signature_version="test")
    at_missing_key = stored(gone, bucket, missing_key)
    return [
        Poison(
            "invalid-json",
            "scan",
            b'{"type": "file.received", "event_id": ',
            "InvalidEvent",
            "Invalid JSON",
        ),
        Poison(
            "schema-version-2",
            "store",
            as_json(scanned, schema_version=2),
            "InvalidEvent",
            "schema_version",
        ),
        Poison(
            "missing-fields",
            "thumbnail",
            as_json(at_missing_key, sha256=..., key=...),
            "InvalidEvent",
            "Field required",
        ),
        Poison("garbage-5mb", "commit", garbage, "InvalidEvent", "Invalid JSON"),
        Poison("spool-source-gone", "scan", as_json(gone), "SourceMissing", "spooled file is gone"),
        Poison(
            "s3-object-gone", "thumbnail", as_json(at_missing_key), "SourceMissing", missing_key
        ),
        Poison("empty-body", "store", b"", "InvalidEvent", "Invalid JSON"),
        Poison(
            "foreign-bucket",
            "thumbnail",
            as_json(stored(gone, "elsewhere", missing_key)),
            "ForgedEvent",
            "names bucket 'elsewhere', not Sluice's bucket",
        ),
        Poison(
            "another-owners-key",
            "commit",
            as_json(stored(mallory, bucket, missing_key)),
            "ForgedEvent",
            f"of owner 'mallory' names key '{missing_key}'",
        ),
        Poison(
            "wrong-stage",
            "scan",
            as_json(at_missing_key),
            "InvalidEvent",
            "does not take file.stored",
        ),
        Poison(
            "spool-traversal",
            "scan",
            as_json(gone, source="spool://../../etc/passwd"),
            "InvalidSource",
            "spool name not allowed",
        ),
        Poison(
            "unknown-type",
            "commit",
            as_json(gone, type="file.exploded"),
            "InvalidEvent",
            "file.exploded",
        ),
    ]  # fmt: skip  (one poison a line reads as a table)


def upload(pipeline: Pipeline, name: str, data: bytes) -> str:
    with pipeline.client() as client:
        answer = client.post("/v1/files", files={"file": (name, data)})
    assert answer.status_code == 202, f"{name}: {answer.status_code} {answer.text}"
    file_id: str = answer.json()["file_id"]
    return file_id


async def _interleave(pipeline: Pipeline, poison: list[Poison]) -> list[str]:
    """Upload a good sample, publish one poison, and so on; return the good uploads' ids."""
    good_ids = []
    connection = await aio_pika.connect(pipeline.env["SLUICE_AMQP_URL"])
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        for i, message in enumerate(poison):
            name = GOOD_SAMPLES[i % len(GOOD_SAMPLES)]
            data = (SAMPLES / name).read_bytes()
            good_ids.append(await asyncio.to_thread(upload, pipeline, name, data))
            queue = f"{pipeline.prefix}.{message.stage}"
            await publish(channel, queue, message.body, message.message_id)
        for name in GOOD_SAMPLES[len(poison) % len(GOOD_SAMPLES) :]:
            data = (SAMPLES / name).read_bytes()
            good_ids.append(await asyncio.to_thread(upload, pipeline, name, data))
    return good_ids


def decoder_crash_stored(pipeline: Pipeline) -> FileStored:
    """A ``file.stored`` of a PNG whose zlib stream is corrupt, put in the bucket by the test."""
    data = corrupt_png_idat(sample("photo.png"))
    event = received("corrupt-idat.png", data, "spool://unused", "image/png")
    key = object_key(event.owner, event.file_id, event.received_at, event.original_name)
    devservices.s3_client().put_object(Bucket=pipeline.bucket, Key=key, Body=data)
    return stored(event, pipeline.bucket, key)


def summary(line: str) -> None:
    """The test's counts: printed (``-s``) and in the end-of-run "fault test counts" section."""
    print(line)
    REPORTS.append(line)


def test_poison_is_dead_lettered_with_its_reason_and_good_uploads_pass(
    pipeline: Pipeline,
) -> None:
    started = time.monotonic()
    topology = Topology(prefix=pipeline.prefix)
    dead_letter_queues = [topology.dead_letter_queue(stage) for stage in STAGES]
    work_queues = [q for s in STAGES for q in (topology.queue(s), topology.retry_queue(s))]
    poison = poison_messages(pipeline.bucket)
    by_id = {p.message_id: p for p in poison}

    good_ids = asyncio.run(_interleave(pipeline, poison))
    # Images that make the decoder fail inside the pixel data: over HTTP, and one file.stored
    # published straight to the thumbnail queue.
    crash_ids = [
        upload(pipeline, "corrupt-idat.png", corrupt_png_idat(sample("photo.png"))),
        upload(
            pipeline, "corrupt-dht.jpg", corrupt_jpeg_huffman_table(sample("photo-rotated.jpg"))
        ),
    ]
    direct = decoder_crash_stored(pipeline)
    publish_event(topology.queue("thumbnail"), direct, pipeline.env["SLUICE_AMQP_URL"])
    crash_ids.append(str(direct.file_id))

    good = {file_id: pipeline.wait_final(file_id)["status"] for file_id in good_ids}
    crashed = {file_id: pipeline.wait_final(file_id) for file_id in crash_ids}
    wait_idle(work_queues)
    alive = pipeline.process.poll() is None
    letters = take(dead_letter_queues)

    # Every poison message in its stage's dead-letter queue, once, with the reason.
    found = Counter(letter.message_id for letter in letters)
    problems = []
    for letter in letters:
        expected = by_id.get(letter.message_id or "")
        if expected is None:
            problems.append(
                f"unexpected dead letter in {letter.queue}: "
                f"{letter.headers.get('x-sluice-error-type')}: "
                f"{str(letter.headers.get('x-sluice-error-message'))[:200]}"
            )
            continue
        headers = letter.headers
        message = str(headers.get("x-sluice-error-message", ""))
        checks = {
            "queue": (letter.queue, topology.dead_letter_queue(expected.stage)),
            "stage header": (headers.get("x-sluice-stage"), expected.stage),
            "error type": (headers.get("x-sluice-error-type"), expected.error_type),
            "attempts": (headers.get("x-sluice-attempts"), 1),
            "reason given": (expected.says in message, True),
            "body kept": (
                hashlib.sha256(letter.body).digest(),
                hashlib.sha256(expected.body).digest(),
            ),
        }
        problems += [
            f"{expected.message_id}: {what} is {got!r}, expected {want!r} ({message[:200]})"
            for what, (got, want) in checks.items()
            if got != want
        ]
    problems += [
        f"{p.message_id}: dead-lettered {found[p.message_id]} times"
        for p in poison
        if found[p.message_id] != 1
    ]

    # Good uploads available; decoder failures available without thumbnails, saying why.
    crash_rows = {
        file_id: pipeline.sql(
            "SELECT status, thumbnails, thumbnail_error FROM file_versions WHERE file_id = %s",
            file_id,
        )
        for file_id in crash_ids
    }
    ids = [*good_ids, *crash_ids]
    versions = Counter(
        str(row[0])
        for row in pipeline.sql(
            "SELECT file_id FROM file_versions WHERE file_id = ANY(%s::uuid[])", ids
        )
    )
    commits = Counter(
        str(row[0])
        for row in pipeline.sql(
            "SELECT file_id FROM file_events WHERE event_type = 'file.committed'"
            " AND file_id = ANY(%s::uuid[])",
            ids,
        )
    )
    duplicates = sum(versions[i] != 1 for i in ids) + sum(commits[i] != 1 for i in ids)
    per_queue = Counter(letter.queue.rsplit(".", 2)[-2] for letter in letters)
    accepted = len(good_ids) + len(crash_ids)
    statuses = Counter([*good.values(), *(info["status"] for info in crashed.values())])
    summary(
        f"[fault poison-messages] accepted={accepted} refused=0 "
        f"committed_available={statuses['available']} "
        f"committed_rejected={statuses['rejected']} dead_lettered={len(letters)} "
        f"({', '.join(f'{q}={n}' for q, n in sorted(per_queue.items()))}; "
        f"{len(poison)} poison published) duplicates={duplicates} "
        f"decoder_failures_available={sum(not r[0][1] for r in crash_rows.values())} "
        f"process_alive={'yes' if alive else 'NO'} elapsed={time.monotonic() - started:.1f}s"
    )
    assert alive, f"sluice run died; log: {pipeline.log_path}"
    assert set(good.values()) == {"available"}, good
    for file_id, info in crashed.items():
        ((status, thumbnails, error),) = crash_rows[file_id]
        assert (info["status"], status, thumbnails) == ("available", "available", []), info
        assert error and error.startswith("corrupt image: "), error
    assert not problems, "\n".join(problems)
    assert duplicates == 0, {"versions": versions, "commits": commits}


# --- crash loop -----------------------------------------------------------------------------------

CRASH_PREFIX = "t_crash"
CRASH_DELIVERY_LIMIT = 3
#: A stage consumer whose handler kills its process (exit 139, as a segfault in a decoder would)
#: on one file name: no exception, no ``finally``, no ack; the connection just drops.
CRASHING_CONSUMER = textwrap.dedent(
    """
    import asyncio, os, signal, sys

    from shared.events import FileThumbnailed
    from shared.runner import StageConsumer
    from shared.stage import Stage
    from shared.settings import AmqpSettings
    from shared.topology import Topology

    async def handle(event):
        if event.original_name == "crash.png":
            os._exit(139)
        return [event.follow(FileThumbnailed, bucket=event.bucket, key=event.key)]

    async def main():
        prefix, limit = sys.argv[1], int(sys.argv[2])
        settings = AmqpSettings(url=sys.argv[3], prefix=prefix, delivery_limit=limit)
        topology = Topology(prefix=prefix, delivery_limit=limit)
        stage = Stage(name="thumbnail", handle=handle)
        consumer = StageConsumer(stage, settings, topology)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await consumer.start()
        print("consuming", flush=True)
        await stop.wait()
        await consumer.stop()

    asyncio.run(main())
    """
)


async def _reset_topology(amqp_url: str, topology: Topology, declare: bool) -> None:
    """Delete every queue and exchange of ``topology``; declare them afresh if ``declare``."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await topology.delete(await connection.channel())
        if declare:
            await topology.declare(await connection.channel())


def crash_event(name: str) -> FileStored:
    data = sample("photo.png")
    event = received(name, data, "spool://unused", "image/png")
    return stored(event, "sluice-unused", f"alice/{event.file_id}-{name}")


def test_a_message_that_kills_its_consumer_is_stopped_by_the_delivery_limit(
    services: object, tmp_path: Path
) -> None:
    started = time.monotonic()
    topology = Topology(prefix=CRASH_PREFIX, delivery_limit=CRASH_DELIVERY_LIMIT)
    work, dead, committed = (
        topology.queue("thumbnail"),
        topology.dead_letter_queue("thumbnail"),
        topology.queue("commit"),
    )
    script = tmp_path / "crashing_consumer.py"
    script.write_text(CRASHING_CONSUMER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(script), CRASH_PREFIX, str(CRASH_DELIVERY_LIMIT), AMQP_URL]
    asyncio.run(_reset_topology(AMQP_URL, topology, declare=True))
    poison = crash_event("crash.png")
    publish_event(work, poison)

    exits: list[int] = []
    process: subprocess.Popen[bytes] | None = None
    try:
        # Restart the consumer each time it dies, until one stays up with the message gone
        # to the dead-letter queue (bounded: a limit that never triggers fails here).
        for _ in range(CRASH_DELIVERY_LIMIT + 5):
            with (tmp_path / f"consumer-{len(exits)}.log").open("wb") as log:
                process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
            deadline = time.monotonic() + 30
            while process.poll() is None and depths([dead])[dead] == 0:
                assert time.monotonic() < deadline, "consumer neither crashed nor dead-lettered"
                time.sleep(0.2)
            if process.poll() is None:
                break
            exits.append(process.returncode)
            process = None
        assert process is not None, f"still crashing after {len(exits)} restarts"

        # The next message is handled by the consumer that is up now.
        good = crash_event("fine.png")
        publish_event(work, good)
        deadline = time.monotonic() + 30
        while (answers := take([committed])) == []:
            assert process.poll() is None, "consumer died on a good message"
            assert time.monotonic() < deadline, "good message not handled"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        letters = take([dead])
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        asyncio.run(_reset_topology(AMQP_URL, topology, declare=False))

    # RabbitMQ 3.10 (rabbit_fifo): a message that goes back to the queue because its consumer's
    # channel went down has its delivery count incremented, and is dead-lettered with reason
    # delivery_limit once that count exceeds x-delivery-limit. So it is delivered limit + 1
    # times, and each of those deliveries killed a consumer.
    summary(
        f"[fault crash-loop] delivery_limit={CRASH_DELIVERY_LIMIT} consumer_crashes={len(exits)} "
        f"exit_codes={sorted(set(exits))} dead_lettered={len(letters)} "
        f"next_message_handled={'yes' if len(answers) == 1 else 'NO'} "
        f"elapsed={time.monotonic() - started:.1f}s"
    )
    assert exits == [139] * (CRASH_DELIVERY_LIMIT + 1)
    assert [letter.message_id for letter in letters] == [str(poison.event_id)]
    headers = letters[0].headers
    assert headers.get("x-first-death-reason") == "delivery_limit", headers
    assert headers.get("x-first-death-queue") == work, headers
    (death,) = headers["x-death"]
    assert (death["reason"], death["queue"]) == ("delivery_limit", work), death
    assert "x-sluice-error-type" not in headers  # our run loop never saw it fail
    assert letters[0].body == poison.model_dump_json().encode()
    ((answer_body,),) = [(a.body,) for a in answers]
    assert json.loads(answer_body)["causation_id"] == str(good.event_id)
