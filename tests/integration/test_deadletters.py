"""Listing and replaying dead letters against the real RabbitMQ (prefix ``t_dlq``).

Dead letters are made the way the run loop makes them: published to ``t_dlq.dlx`` with routing
key ``scan`` and the ``x-sluice-*`` headers. Nothing is skipped: if RabbitMQ cannot be reached,
the fixtures raise and every test here fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from shared import broker
from shared.deadletters import (
    HEADER_REPLAYED_AT,
    HEADER_REPLAYED_FROM_ERROR,
    Selection,
    list_dead_letters,
    replay,
)
from shared.errors import ConfigError, PermanentError
from shared.events import BaseEvent, FileReceived, utcnow
from shared.runner import (
    HEADER_ATTEMPTS,
    HEADER_ERROR_MESSAGE,
    HEADER_ERROR_TYPE,
    HEADER_FIRST_FAILED_AT,
    HEADER_LAST_FAILED_AT,
    HEADER_STAGE,
    Stage,
    StageConsumer,
)
from shared.settings import AmqpSettings
from shared.topology import Topology

pytestmark = pytest.mark.integration

PREFIX = "t_dlq"
AMQP = AmqpSettings(prefix=PREFIX)
TOPOLOGY = Topology(prefix=PREFIX, delivery_limit=AMQP.delivery_limit)
ROOT = Path(__file__).resolve().parents[2]
FIRST_FAILED = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
SCAN = Selection(stages=("scan",))


@pytest.fixture
async def connection(services: Any) -> AsyncIterator[AbstractRobustConnection]:
    """A connection to a freshly declared ``t_dlq`` topology, deleted again afterwards."""
    connection = await broker.connect(AMQP)
    channel = await connection.channel()
    await TOPOLOGY.delete(channel)
    await TOPOLOGY.declare(channel)
    try:
        yield connection
    finally:
        await TOPOLOGY.delete(channel)
        await connection.close()


def received(owner: str = "alice") -> FileReceived:
    now = utcnow()
    return FileReceived(
        event_id=uuid.uuid4(),
        occurred_at=now,
        file_id=uuid.uuid4(),
        owner=owner,
        received_at=now,
        source="spool://abc.bin",
        size_bytes=3,
        sha256="0" * 64,
        content_type="image/png",
        original_name="photo.png",
    )


async def dead_letter(
    publisher: broker.Publisher,
    event: BaseEvent | bytes,
    *,
    error_type: str = "ScannerUnavailable",
    error_message: str = "clamd down",
    attempts: int = 3,
) -> str:
    """Dead-letter ``event`` to ``t_dlq.scan.dlq`` as the run loop does; return its message id."""
    last = FIRST_FAILED + timedelta(seconds=attempts)
    headers = {
        "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        HEADER_STAGE: "scan",
        HEADER_ERROR_TYPE: error_type,
        HEADER_ERROR_MESSAGE: error_message,
        HEADER_ATTEMPTS: attempts,
        HEADER_FIRST_FAILED_AT: FIRST_FAILED.isoformat(),
        HEADER_LAST_FAILED_AT: last.isoformat(),
    }
    if isinstance(event, bytes):
        message = aio_pika.Message(
            event, headers=headers, message_id=str(uuid.uuid4()), delivery_mode=2
        )
    else:
        message = broker.event_message(event, headers)
    await publisher.publish_to_exchange(TOPOLOGY.dead_letter_exchange, "scan", message)
    assert message.message_id is not None
    return message.message_id


async def fill(connection: AbstractRobustConnection, count: int) -> list[str]:
    publisher = await broker.Publisher.create(connection, AMQP, TOPOLOGY)
    return [await dead_letter(publisher, received()) for _ in range(count)]


async def depth(connection: AbstractRobustConnection, name: str) -> int:
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def drain(connection: AbstractRobustConnection, name: str) -> list[aio_pika.IncomingMessage]:
    """Take (and ack) every message of ``name``, head first."""
    channel = await connection.channel()
    queue = await channel.declare_queue(name, passive=True)
    taken = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        taken.append(message)
    await channel.close()
    return taken  # type: ignore[return-value]


async def wait_for(condition: Any, timeout_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {condition.__name__}")
        await asyncio.sleep(0.05)


def sluice_env() -> dict[str, str]:
    return {**os.environ, "SLUICE_AMQP_PREFIX": PREFIX, "SLUICE_LOG_LEVEL": "warning"}


async def test_list_shows_every_field_and_leaves_the_queue_as_it_was(
    connection: AbstractRobustConnection,
) -> None:
    publisher = await broker.Publisher.create(connection, AMQP, TOPOLOGY)
    first = received("bob")
    ids = [await dead_letter(publisher, first, error_type="ChecksumMismatch", attempts=1)]
    ids.append(await dead_letter(publisher, b"{not json", error_type="InvalidEvent"))
    ids += [await dead_letter(publisher, received()) for _ in range(58)]  # > 32: hash order
    dlq = TOPOLOGY.dead_letter_queue("scan")

    letters = await list_dead_letters(connection, TOPOLOGY, SCAN)

    assert [letter.message_id for letter in letters] == ids
    head = letters[0]
    assert (head.file_id, head.owner, head.event_type) == (str(first.file_id), "bob", first.type)
    assert (head.stage, head.error_type, head.error_message) == (
        "scan",
        "ChecksumMismatch",
        "clamd down",
    )
    assert head.attempts == 1
    assert head.first_failed_at == FIRST_FAILED
    assert head.last_failed_at == FIRST_FAILED + timedelta(seconds=1)
    assert head.body_bytes == len(first.model_dump_json().encode())
    assert head.delivery_count == 0 and head.replayed_at is None
    junk = letters[1]
    assert (junk.file_id, junk.owner, junk.event_type) == (None, None, None)
    assert (junk.error_type, junk.attempts, junk.body_bytes) == ("InvalidEvent", 3, 9)
    assert await depth(connection, dlq) == 60

    again = await list_dead_letters(connection, TOPOLOGY, SCAN)
    assert [letter.message_id for letter in again] == ids
    # Every listing is a delivery to RabbitMQ: x-delivery-count goes up by one each time.
    assert {letter.delivery_count for letter in again} == {1}
    assert await depth(connection, dlq) == 60
    assert [m.message_id for m in await drain(connection, dlq)] == ids


async def test_list_describes_a_message_rabbitmq_dead_lettered(
    connection: AbstractRobustConnection,
) -> None:
    """A crash loop: the stage queue's delivery limit dead-letters the message itself."""
    publisher = await broker.Publisher.create(connection, AMQP, TOPOLOGY)
    event = received()
    await publisher.publish(event)
    channel = await connection.channel()
    stage_queue = await channel.declare_queue(TOPOLOGY.queue("scan"), passive=True)
    for _ in range(TOPOLOGY.delivery_limit + 1):
        message = await stage_queue.get(no_ack=False, fail=False, timeout=5)
        assert message is not None
        await message.nack(requeue=True)

    async def arrived() -> bool:
        return await depth(connection, TOPOLOGY.dead_letter_queue("scan")) == 1

    await wait_for(arrived)
    [letter] = await list_dead_letters(connection, TOPOLOGY, SCAN)
    assert (letter.file_id, letter.error_type, letter.attempts) == (
        str(event.file_id),
        "delivery_limit",
        None,
    )
    assert letter.error_message == "dead-lettered by RabbitMQ from t_dlq.scan (delivery_limit)"
    assert letter.last_failed_at is not None and letter.first_failed_at == letter.last_failed_at


async def test_list_of_an_unknown_prefix_is_a_config_error(
    connection: AbstractRobustConnection,
) -> None:
    with pytest.raises(ConfigError, match=r"no queue t_dlq_none\.scan\.dlq"):
        await list_dead_letters(connection, Topology(prefix="t_dlq_none"), SCAN)
    with pytest.raises(ValueError, match="unknown stage"):
        Selection(stages=("nope",))


async def test_replay_with_a_limit_then_the_rest(connection: AbstractRobustConnection) -> None:
    ids = await fill(connection, 5)
    await list_dead_letters(connection, TOPOLOGY, SCAN)  # their x-delivery-count is now 1
    progress: list[tuple[int, int, int]] = []

    result = await replay(
        connection,
        TOPOLOGY,
        SCAN,
        limit=2,
        settings=AMQP,
        on_progress=lambda examined, total, done: progress.append((examined, total, done)),
    )

    assert (result.depth_at_start, result.examined, result.replayed) == (5, 2, 2)
    assert list(result.message_ids) == ids[:2]
    assert progress == [(0, 5, 0), (1, 5, 1), (2, 5, 2)]
    assert await depth(connection, TOPOLOGY.dead_letter_queue("scan")) == 3
    moved = await drain(connection, TOPOLOGY.queue("scan"))
    assert [m.message_id for m in moved] == ids[:2]
    for message in moved:
        headers = message.headers or {}
        assert headers[HEADER_ATTEMPTS] == 1
        assert headers[HEADER_REPLAYED_FROM_ERROR] == "ScannerUnavailable: clamd down"
        replayed_at = datetime.fromisoformat(str(headers[HEADER_REPLAYED_AT]))
        assert abs(replayed_at - datetime.now(UTC)) < timedelta(minutes=1)
        for gone in (HEADER_ERROR_TYPE, HEADER_ERROR_MESSAGE, HEADER_FIRST_FAILED_AT, "x-death"):
            assert gone not in headers
        assert headers["x-delivery-count"] == 0  # the stage queue's own count, from scratch
        assert headers["traceparent"].startswith("00-aaaa")  # other headers travel on
        assert message.type == "file.received" and message.content_type == "application/json"
        assert json.loads(message.body)["event_id"] == message.message_id

    rest = await replay(connection, TOPOLOGY, SCAN, settings=AMQP)
    assert (rest.depth_at_start, rest.replayed) == (3, 3)
    assert [m.message_id for m in await drain(connection, TOPOLOGY.queue("scan"))] == ids[2:]
    assert await depth(connection, TOPOLOGY.dead_letter_queue("scan")) == 0
    empty = await replay(connection, TOPOLOGY, SCAN, settings=AMQP)
    assert (empty.depth_at_start, empty.replayed) == (0, 0)


async def test_messages_failing_again_are_not_replayed_in_a_loop(
    connection: AbstractRobustConnection,
) -> None:
    """A real scan consumer that still fails: every replayed message comes straight back."""
    ids = await fill(connection, 20)

    async def still_broken(event: BaseEvent) -> list[BaseEvent]:
        raise PermanentError("still broken", file_id=str(event.file_id))

    consumer = StageConsumer(
        Stage("scan", frozenset({"file.received"}), still_broken), AMQP, TOPOLOGY
    )
    await consumer.start()
    try:
        result = await replay(connection, TOPOLOGY, SCAN, settings=AMQP)

        async def all_back() -> bool:
            return (
                await depth(connection, TOPOLOGY.dead_letter_queue("scan")) == 20
                and await depth(connection, TOPOLOGY.queue("scan")) == 0
            )

        await wait_for(all_back)
    finally:
        await consumer.stop()
    assert (result.depth_at_start, result.replayed) == (20, 20)
    assert list(result.message_ids) == ids
    letters = await list_dead_letters(connection, TOPOLOGY, SCAN)
    assert sorted(letter.message_id or "" for letter in letters) == sorted(ids)
    for letter in letters:
        assert letter.error_type == "PermanentError" and letter.attempts == 1
        assert letter.error_message is not None and letter.error_message.startswith("still broken")
        assert letter.replayed_from_error == "ScannerUnavailable: clamd down"
        assert letter.replayed_at is not None and letter.first_failed_at is not None
        assert letter.first_failed_at >= letter.replayed_at  # a new failure, recorded afresh


async def test_cli_list_json(connection: AbstractRobustConnection) -> None:
    ids = await fill(connection, 3)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", "dlq", "list", "scan", "--json",
        cwd=ROOT, env=sluice_env(), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    assert process.returncode == 0
    listed = json.loads(out)
    assert [item["message_id"] for item in listed] == ids
    assert listed[0]["error_type"] == "ScannerUnavailable"
    assert listed[0]["first_failed_at"] == FIRST_FAILED.isoformat()
    assert await depth(connection, TOPOLOGY.dead_letter_queue("scan")) == 3


async def test_replay_killed_midway_loses_nothing(connection: AbstractRobustConnection) -> None:
    total = 400
    ids = await fill(connection, total)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", "dlq", "replay", "scan",
        cwd=ROOT, env=sluice_env(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:

        async def some_moved() -> bool:
            return await depth(connection, TOPOLOGY.queue("scan")) >= 10

        await wait_for(some_moved, timeout_s=30)
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL
    moved_at_kill = await depth(connection, TOPOLOGY.queue("scan"))
    assert moved_at_kill < total, "the replay finished before it could be killed"

    async def requeued() -> bool:  # the unacked message (if any) is back once the broker notices
        stage = await depth(connection, TOPOLOGY.queue("scan"))
        return stage + await depth(connection, TOPOLOGY.dead_letter_queue("scan")) >= total

    await wait_for(requeued)
    left = await list_dead_letters(connection, TOPOLOGY, SCAN)
    moved = await drain(connection, TOPOLOGY.queue("scan"))
    everywhere = [letter.message_id for letter in left] + [m.message_id for m in moved]
    assert total <= len(everywhere) <= total + 1  # at worst the one in flight is in both
    assert set(everywhere) == set(ids)
    assert [m.message_id for m in moved] == ids[: len(moved)]  # head first, in order
