"""What the dead-letter tests share: a fresh topology under a test's own prefix, dead letters
made the way the run loop makes them, and reading queues back."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from shared.adapters import broker
from shared.events import BaseEvent, FileReceived, utcnow
from shared.retry import (
    HEADER_ATTEMPTS,
    HEADER_ERROR_MESSAGE,
    HEADER_ERROR_TYPE,
    HEADER_FIRST_FAILED_AT,
    HEADER_LAST_FAILED_AT,
    HEADER_STAGE,
)
from shared.settings import AmqpSettings
from shared.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
FIRST_FAILED = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
TRACEPARENT = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


@dataclass(frozen=True)
class Broker:
    """A test's own prefix on the real RabbitMQ: its settings, topology and connection."""

    amqp: AmqpSettings
    topology: Topology
    connection: AbstractRobustConnection

    async def publisher(self) -> broker.Publisher:
        return await broker.Publisher.create(self.connection, self.amqp, self.topology)

    async def depth(self, name: str) -> int:
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            return int(queue.declaration_result.message_count or 0)
        finally:
            await channel.close()

    async def drain(self, name: str) -> list[AbstractIncomingMessage]:
        """Take (and ack) every message of ``name``, head first."""
        channel = await self.connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        taken = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
        await channel.close()
        return taken

    def env(self) -> dict[str, str]:
        """The environment of a ``sluice`` subprocess on this prefix."""
        return {**os.environ, "SLUICE_AMQP_PREFIX": self.amqp.prefix, "SLUICE_LOG_LEVEL": "warning"}


@asynccontextmanager
async def fresh_broker(prefix: str) -> AsyncIterator[Broker]:
    """A connection to a freshly declared topology under ``prefix``, deleted again afterwards."""
    amqp = AmqpSettings(prefix=prefix)
    topology = Topology.of(amqp)
    connection = await broker.connect(amqp)
    channel = await connection.channel()
    await topology.delete(channel)
    await topology.declare(channel)
    try:
        yield Broker(amqp, topology, connection)
    finally:
        await topology.delete(channel)
        await connection.close()


def received(owner: str = "alice", file_id: uuid.UUID | None = None) -> FileReceived:
    now = utcnow()
    return FileReceived(
        event_id=uuid.uuid4(),
        occurred_at=now,
        file_id=file_id or uuid.uuid4(),
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
    topology: Topology,
    event: BaseEvent | bytes,
    *,
    stage: str = "scan",
    error_type: str = "ScannerUnavailable",
    error_message: str = "clamd down",
    attempts: int = 3,
    first_failed: datetime = FIRST_FAILED,
) -> str:
    """Dead-letter ``event`` to ``<prefix>.<stage>.dlq`` as the run loop does; its message id."""
    last = first_failed + timedelta(seconds=attempts)
    headers = {
        "traceparent": TRACEPARENT,
        HEADER_STAGE: stage,
        HEADER_ERROR_TYPE: error_type,
        HEADER_ERROR_MESSAGE: error_message,
        HEADER_ATTEMPTS: attempts,
        HEADER_FIRST_FAILED_AT: first_failed.isoformat(),
        HEADER_LAST_FAILED_AT: last.isoformat(),
    }
    if isinstance(event, bytes):
        message = aio_pika.Message(
            event, headers=headers, message_id=str(uuid.uuid4()), delivery_mode=2
        )
    else:
        message = broker.event_message(event, headers)
    await publisher.publish_to_exchange(topology.dead_letter_exchange, stage, message)
    assert message.message_id is not None
    return message.message_id


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {condition.__name__}")
        await asyncio.sleep(0.05)


async def sluice(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run ``python -m services ARGS``; its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
