"""The run loop's circuit breaker against the real RabbitMQ (prefix ``t_breaker``).

The dependency is a switch of the test's own (its probe fails while it is "down"), so each step
of the breaker can be watched: the consumer leaves the queue, what was in flight is parked with
its attempts untouched, ``/readyz`` and ``sluice_dependency_up`` say which dependency is down,
nothing is dead-lettered however long it lasts, and the consumer comes back when the probe
answers. A failure of the same error type while the dependency answers its probe is the
message's own: it spends attempts and is dead-lettered as before. The breaker against real
clamd, PostgreSQL and S3 outages: ``tests/faults/``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import prometheus_client
import pytest
from aio_pika.abc import AbstractChannel

from shared.adapters import broker
from shared.breaker import BreakerState, Dependency, DependencyName
from shared.errors import ScannerUnavailable
from shared.events import BaseEvent, FileReceived, utcnow
from shared.retry import FailureHistory
from shared.runner import StageConsumer
from shared.settings import AmqpSettings, BreakerSettings
from shared.stage import Reply, Stage
from shared.telemetry.health import readiness
from shared.topology import Topology

pytestmark = pytest.mark.integration

PREFIX = "t_breaker"
AMQP = AmqpSettings(prefix=PREFIX, max_attempts=3, retry_base_delay_s=0.05, retry_max_delay_s=0.2)
BREAKER = BreakerSettings(
    probe_base_delay_s=0.05, probe_max_delay_s=0.3, probe_timeout_s=2, park_delay_s=0.05
)
TOPOLOGY = Topology(prefix=PREFIX, delivery_limit=AMQP.delivery_limit)


@pytest.fixture
async def channel(services: Any) -> AsyncIterator[AbstractChannel]:
    connection = await broker.connect(AmqpSettings(prefix=PREFIX))
    channel = await connection.channel()
    await TOPOLOGY.delete(channel)
    await TOPOLOGY.declare(channel)
    try:
        yield channel
    finally:
        await TOPOLOGY.delete(channel)
        await connection.close()


class Clamd:
    """A stand-in for clamd: ``down`` makes scans and the probe fail; ``poison`` lists files
    whose scans fail even while it answers (a per-message fault, e.g. a size limit)."""

    def __init__(self) -> None:
        self.down = False
        self.poison: set[uuid.UUID] = set()
        self.handled: dict[uuid.UUID, FailureHistory] = {}
        self.probes = 0

    async def probe(self) -> None:
        self.probes += 1
        if self.down:
            raise ScannerUnavailable("clamd exchange failed: ConnectionRefusedError")

    async def handle(self, event: BaseEvent, history: FailureHistory) -> Reply:
        await asyncio.sleep(0.01)
        if self.down:
            raise ScannerUnavailable("clamd exchange failed: ConnectionRefusedError")
        if event.file_id in self.poison:
            raise ScannerUnavailable("clamd gave no verdict: 'INSTREAM size limit exceeded. ERROR'")
        self.handled[event.file_id] = history
        return []


def received() -> FileReceived:
    now = utcnow()
    return FileReceived(
        event_id=uuid.uuid4(),
        occurred_at=now,
        file_id=uuid.uuid4(),
        owner="alice",
        received_at=now,
        source="spool://abc.bin",
        size_bytes=3,
        sha256="0" * 64,
        content_type="image/png",
        original_name="photo.png",
    )


async def publish(channel: AbstractChannel, count: int) -> list[FileReceived]:
    events = [received() for _ in range(count)]
    for event in events:
        await channel.default_exchange.publish(
            broker.event_message(event), routing_key=TOPOLOGY.queue("scan")
        )
    return events


async def depth(channel: AbstractChannel, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``, asked of the broker now (aio-pika's
    ``declare_queue`` answers a queue this channel declared from its cache)."""
    underlay = await channel.get_underlay_channel()
    result = await underlay.queue_declare(queue, passive=True)
    return int(result.message_count or 0), int(result.consumer_count or 0)


async def until(condition: Callable[[], Any], what: str, timeout_s: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.05)


def dependency_up() -> float | None:
    return prometheus_client.REGISTRY.get_sample_value(
        "sluice_dependency_up", {"stage": "scan", "dependency": "clamd"}
    )


async def test_an_outage_parks_messages_without_spending_attempts_and_resumes(
    channel: AbstractChannel,
) -> None:
    clamd = Clamd()
    stage = Stage(
        "scan",
        handle_with_history=clamd.handle,
        dependencies=(Dependency(DependencyName.CLAMD, (ScannerUnavailable,), clamd.probe),),
    )
    consumer = StageConsumer(stage, AMQP, TOPOLOGY, BREAKER)
    await consumer.start()
    try:
        assert consumer.ready and dependency_up() == 1
        first = await publish(channel, 3)

        async def handled_all() -> bool:
            return all(e.file_id in clamd.handled for e in first)

        await until(handled_all, "the first events handled")

        clamd.down = True
        during = await publish(channel, 20)

        async def opened() -> bool:
            return (
                consumer.breaker.state is not BreakerState.CLOSED
                and (await depth(channel, TOPOLOGY.queue("scan")))[1] == 0
            )

        await until(opened, "the breaker to open and the consumer to leave the queue")
        status, body = readiness([consumer])
        assert status == 503
        assert body["error"]["message"].startswith("not ready: scan (breaker ")  # type: ignore[index]
        assert body["breakers"]["scan"]["dependency"] == "clamd"  # type: ignore[index]
        assert dependency_up() == 0

        # However long it lasts: nothing is dead-lettered, the events wait in the stage queue.
        probes_before = clamd.probes
        await asyncio.sleep(2)
        assert clamd.probes > probes_before, "the dependency is probed while the breaker is open"
        assert (await depth(channel, TOPOLOGY.dead_letter_queue("scan")))[0] == 0

        async def all_waiting() -> bool:  # in the stage queue, or parked in its wait queue
            ready, _ = await depth(channel, TOPOLOGY.queue("scan"))
            parked, _ = await depth(channel, TOPOLOGY.retry_queue("scan"))
            return ready + parked == len(during)

        await until(all_waiting, "every event to wait in the stage or wait queue", timeout_s=5)

        clamd.down = False

        async def handled_during() -> bool:
            return all(e.file_id in clamd.handled for e in during)

        await until(handled_during, "every event handled once the dependency is back")
        assert consumer.breaker.state is BreakerState.CLOSED and consumer.ready
        assert dependency_up() == 1
        assert (await depth(channel, TOPOLOGY.queue("scan")))[1] == 1
        # No attempt was spent: every event was handled as if it had never failed.
        assert {clamd.handled[e.file_id].attempts for e in during} == {None}
        assert (await depth(channel, TOPOLOGY.dead_letter_queue("scan")))[0] == 0

        # A failure of the same type while clamd answers is the message's: attempts, then DLQ.
        poison = received()
        clamd.poison.add(poison.file_id)
        await channel.default_exchange.publish(
            broker.event_message(poison), routing_key=TOPOLOGY.queue("scan")
        )

        async def dead_lettered() -> bool:
            return (await depth(channel, TOPOLOGY.dead_letter_queue("scan")))[0] == 1

        await until(dead_lettered, "the poison message to be dead-lettered")
        dlq = await channel.declare_queue(TOPOLOGY.dead_letter_queue("scan"), passive=True)
        letter = await dlq.get(fail=True)
        assert letter is not None
        await letter.ack()
        assert letter.headers["x-sluice-attempts"] == AMQP.max_attempts
        assert letter.headers["x-sluice-error-type"] == "ScannerUnavailable"
        assert consumer.breaker.state is BreakerState.CLOSED
    finally:
        await consumer.stop()
