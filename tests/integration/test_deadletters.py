"""Listing and replaying dead letters against the real RabbitMQ (prefix ``t_dlq``).

Dead letters are made the way the run loop makes them: published to ``t_dlq.dlx`` with routing
key ``scan`` and the ``x-sluice-*`` headers. Nothing is skipped: if RabbitMQ cannot be reached,
the fixtures raise and every test here fails.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.errors import ConfigError, PermanentError
from shared.events import BaseEvent
from shared.ops.deadletters import (
    HEADER_REPLAY_COUNT,
    HEADER_REPLAYED_AT,
    HEADER_REPLAYED_FROM_ERROR,
    Selection,
    list_dead_letters,
    replay,
    show_dead_letter,
)
from shared.retry import (
    HEADER_ATTEMPTS,
    HEADER_ERROR_MESSAGE,
    HEADER_ERROR_TYPE,
    HEADER_FIRST_FAILED_AT,
)
from shared.runner import StageConsumer
from shared.stage import Stage
from shared.topology import Topology
from tests.integration.dlq_support import (
    FIRST_FAILED,
    ROOT,
    Broker,
    dead_letter,
    fresh_broker,
    received,
    sluice,
    wait_for,
)

pytestmark = pytest.mark.integration

SCAN = Selection(stages=("scan",))


@pytest.fixture
async def b(services: Any) -> AsyncIterator[Broker]:
    """A freshly declared ``t_dlq`` topology on the real RabbitMQ."""
    async with fresh_broker("t_dlq") as fresh:
        yield fresh


async def fill(b: Broker, count: int, **failure: Any) -> list[str]:
    publisher = await b.publisher()
    return [await dead_letter(publisher, b.topology, received(), **failure) for _ in range(count)]


async def test_list_shows_every_field_and_leaves_the_queue_as_it_was(b: Broker) -> None:
    publisher = await b.publisher()
    first = received("bob")
    ids = [
        await dead_letter(publisher, b.topology, first, error_type="ChecksumMismatch", attempts=1)
    ]
    ids.append(await dead_letter(publisher, b.topology, b"{not json", error_type="InvalidEvent"))
    ids += await fill(b, 58)  # > 32: hash order if given back carelessly
    dlq = b.topology.dead_letter_queue("scan")

    letters = await list_dead_letters(b.connection, b.topology, SCAN)

    assert [letter.message_id for letter in letters] == ids
    head = letters[0]
    assert (head.file_id, head.owner, head.event_type) == (str(first.file_id), "bob", first.type)
    assert (head.stage, head.failed_stage, head.error_type, head.error_message) == (
        "scan",
        "scan",
        "ChecksumMismatch",
        "clamd down",
    )
    assert head.attempts == 1
    assert head.first_failed_at == FIRST_FAILED
    assert head.last_failed_at == FIRST_FAILED + timedelta(seconds=1)
    assert head.body_bytes == len(first.model_dump_json().encode())
    assert head.delivery_count == 0 and head.replayed_at is None and head.replay_count == 0
    junk = letters[1]
    assert (junk.file_id, junk.owner, junk.event_type) == (None, None, None)
    assert (junk.error_type, junk.attempts, junk.body_bytes) == ("InvalidEvent", 3, 9)
    assert await b.depth(dlq) == 60

    again = await list_dead_letters(b.connection, b.topology, SCAN)
    assert [letter.message_id for letter in again] == ids
    # Every listing is a delivery to RabbitMQ: x-delivery-count goes up by one each time.
    assert {letter.delivery_count for letter in again} == {1}
    assert await b.depth(dlq) == 60
    assert [m.message_id for m in await b.drain(dlq)] == ids


async def test_a_message_rabbitmq_dead_lettered_is_listed_and_shown_with_its_x_death(
    b: Broker,
) -> None:
    """A crash loop: the stage queue's delivery limit dead-letters the message itself."""
    publisher = await b.publisher()
    event = received()
    await publisher.publish(event)
    channel = await b.connection.channel()
    stage_queue = await channel.declare_queue(b.topology.queue("scan"), passive=True)
    for _ in range(b.topology.delivery_limit + 1):
        message = await stage_queue.get(no_ack=False, fail=False, timeout=5)
        assert message is not None
        await message.nack(requeue=True)

    async def arrived() -> bool:
        return await b.depth(b.topology.dead_letter_queue("scan")) == 1

    await wait_for(arrived)
    [letter] = await list_dead_letters(b.connection, b.topology, SCAN)
    assert (letter.file_id, letter.error_type, letter.attempts) == (
        str(event.file_id),
        "delivery_limit",
        None,
    )
    assert letter.error_message == "dead-lettered by RabbitMQ from t_dlq.scan (delivery_limit)"
    assert letter.last_failed_at is not None and letter.first_failed_at == letter.last_failed_at
    shown = await show_dead_letter(b.connection, b.topology, str(event.event_id))
    assert shown is not None
    [death] = shown.history
    assert death["event"] == "dead-lettered by RabbitMQ"
    assert (death["queue"], death["reason"]) == ("t_dlq.scan", "delivery_limit")
    assert shown.headers["x-death"][0]["queue"] == "t_dlq.scan"


async def test_list_of_an_unknown_prefix_is_a_config_error(b: Broker) -> None:
    with pytest.raises(ConfigError, match=r"no queue t_dlq_none\.scan\.dlq"):
        await list_dead_letters(b.connection, Topology(prefix="t_dlq_none"), SCAN)
    with pytest.raises(ValueError, match="unknown stage"):
        Selection(stages=("nope",))


async def test_replay_with_a_limit_then_the_rest(b: Broker) -> None:
    ids = await fill(b, 5)
    await list_dead_letters(b.connection, b.topology, SCAN)  # their x-delivery-count is now 1
    progress: list[tuple[int, int, int]] = []

    result = await replay(
        b.connection,
        b.topology,
        SCAN,
        limit=2,
        settings=b.amqp,
        on_progress=lambda examined, total, done: progress.append((examined, total, done)),
    )

    assert (result.depth_at_start, result.examined, result.replayed) == (5, 2, 2)
    assert list(result.message_ids) == ids[:2]
    assert progress == [(0, 5, 0), (1, 5, 1), (2, 5, 2)]
    assert await b.depth(b.topology.dead_letter_queue("scan")) == 3
    moved = await b.drain(b.topology.queue("scan"))
    assert [m.message_id for m in moved] == ids[:2]
    for message in moved:
        headers = message.headers or {}
        assert headers[HEADER_ATTEMPTS] == 1 and headers[HEADER_REPLAY_COUNT] == 1
        assert headers[HEADER_REPLAYED_FROM_ERROR] == "ScannerUnavailable: clamd down"
        replayed_at = datetime.fromisoformat(str(headers[HEADER_REPLAYED_AT]))
        assert abs(replayed_at - datetime.now(UTC)) < timedelta(minutes=1)
        for gone in (HEADER_ERROR_TYPE, HEADER_ERROR_MESSAGE, HEADER_FIRST_FAILED_AT, "x-death"):
            assert gone not in headers
        assert headers["x-delivery-count"] == 0  # the stage queue's own count, from scratch
        assert headers["traceparent"].startswith("00-aaaa")  # other headers travel on
        assert message.type == "file.received" and message.content_type == "application/json"
        assert json.loads(message.body)["event_id"] == message.message_id

    rest = await replay(b.connection, b.topology, SCAN, settings=b.amqp)
    assert (rest.depth_at_start, rest.replayed) == (3, 3)
    assert [m.message_id for m in await b.drain(b.topology.queue("scan"))] == ids[2:]
    assert await b.depth(b.topology.dead_letter_queue("scan")) == 0
    empty = await replay(b.connection, b.topology, SCAN, settings=b.amqp)
    assert (empty.depth_at_start, empty.replayed) == (0, 0)


async def test_messages_failing_again_are_not_replayed_in_a_loop_and_keep_their_story(
    b: Broker,
) -> None:
    """A real scan consumer that still fails: every replayed message comes straight back."""
    ids = await fill(b, 20)

    async def still_broken(event: BaseEvent) -> list[BaseEvent]:
        raise PermanentError("still broken", file_id=str(event.file_id))

    consumer = StageConsumer(Stage("scan", still_broken), b.amqp, b.topology)
    await consumer.start()
    try:
        result = await replay(b.connection, b.topology, SCAN, settings=b.amqp)

        async def all_back() -> bool:
            return (
                await b.depth(b.topology.dead_letter_queue("scan")) == 20
                and await b.depth(b.topology.queue("scan")) == 0
            )

        await wait_for(all_back)
    finally:
        await consumer.stop()
    assert (result.depth_at_start, result.replayed) == (20, 20)
    assert list(result.message_ids) == ids
    letters = await list_dead_letters(b.connection, b.topology, SCAN)
    assert sorted(letter.message_id or "" for letter in letters) == sorted(ids)
    for letter in letters:
        assert letter.error_type == "PermanentError" and letter.attempts == 1
        assert letter.error_message is not None and letter.error_message.startswith("still broken")
        assert letter.replayed_from_error == "ScannerUnavailable: clamd down"
        assert letter.replay_count == 1
        assert letter.replayed_at is not None and letter.first_failed_at is not None
        assert letter.first_failed_at >= letter.replayed_at  # a new failure, recorded afresh

    shown = await show_dead_letter(b.connection, b.topology, ids[0])
    assert shown is not None
    assert [entry["event"] for entry in shown.history] == ["failed", "replayed", "failed"]
    first, replayed, again = shown.history
    assert (first["stage"], first["error_type"], first["attempts"]) == (
        "scan",
        "ScannerUnavailable",
        3,
    )
    assert replayed["from_error"] == "ScannerUnavailable: clamd down"
    assert again["error_type"] == "PermanentError" and again["at"] >= replayed["at"]


async def test_cli_list_json(b: Broker) -> None:
    ids = await fill(b, 3)
    code, out, err = await sluice(b.env(), "dlq", "list", "scan", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [item["message_id"] for item in listed] == ids
    assert listed[0]["error_type"] == "ScannerUnavailable"
    assert listed[0]["first_failed_at"] == FIRST_FAILED.isoformat()
    assert await b.depth(b.topology.dead_letter_queue("scan")) == 3


async def test_filtered_replay_killed_midway_loses_nothing(b: Broker) -> None:
    """kill -9 of a slow (--rate), filtered replay: the held messages come back, none is lost."""
    total = 300
    ids: list[str] = []
    for _ in range(total // 2):
        ids += await fill(b, 1, error_type="ScannerUnavailable")
        ids += await fill(b, 1, error_type="SourceMissing")
    matching = ids[::2]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", "dlq", "replay", "scan",
        "--error", "ScannerUnavailable", "--rate", "50",
        cwd=ROOT, env=b.env(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:

        async def some_moved() -> bool:
            return await b.depth(b.topology.queue("scan")) >= 10

        await wait_for(some_moved, timeout_s=30)
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL
    moved_at_kill = await b.depth(b.topology.queue("scan"))
    assert moved_at_kill < len(matching), "the replay finished before it could be killed"

    async def requeued() -> bool:  # the held messages are back once the broker notices
        stage = await b.depth(b.topology.queue("scan"))
        return stage + await b.depth(b.topology.dead_letter_queue("scan")) >= total

    await wait_for(requeued)
    left = await list_dead_letters(b.connection, b.topology, SCAN)
    moved = await b.drain(b.topology.queue("scan"))
    everywhere = [letter.message_id for letter in left] + [m.message_id for m in moved]
    assert total <= len(everywhere) <= total + 1  # at worst the one in flight is in both
    assert set(everywhere) == set(ids)
    assert [m.message_id for m in moved] == matching[: len(moved)]  # head first, in order
