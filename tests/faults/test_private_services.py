"""The private RabbitMQ and PostgreSQL of ``private_services`` restart as fault tests need.

A confirmed persistent message on a quorum queue survives a broker restart and a SIGKILL; a
robust aio-pika consumer comes back by itself and receives what is published after; a committed
row survives a restart and a crash of the private PostgreSQL, a connection held across it fails
and a new one succeeds. All the while the machine's shared RabbitMQ and PostgreSQL keep running
the same processes. If a private service cannot be had, the fixtures raise: nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aio_pika
import asyncpg
import psycopg
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.abc import FieldTable

from shared.devservices import DevServicesConfig
from shared.devservices.processes import _which
from tests.faults.private_services import (
    PrivatePostgres,
    PrivateRabbitMQ,
    private_postgres,
    private_rabbitmq,
)

pytestmark = pytest.mark.faults

QUORUM: FieldTable = {"x-queue-type": "quorum"}
PREFIX = "faults-private-"
# A quorum queue declared less than ~1 s before a SIGKILL came back without a leader and, once
# an election was forced, empty: see PrivateRabbitMQ.kill. Crash tests declare, then wait.
CRASH_SAFE_AFTER_DECLARE_S = 2.0


# -- the shared instances, before and after -----------------------------------------------------


@dataclass(frozen=True)
class SharedState:
    """What identifies the running shared daemons: a restart changes both."""

    rabbitmq_pid: int
    rabbitmq_ports: frozenset[int]
    postgres_started_at: datetime


def shared_state() -> SharedState:
    """The shared node (``rabbitmqctl`` without ``-n``) and the shared cluster, as they are now."""
    config = DevServicesConfig.from_env()
    ctl = _which("rabbitmqctl")
    assert ctl is not None, "rabbitmqctl not found"
    done = subprocess.run(
        [ctl, "-q", "status", "--formatter", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"shared RabbitMQ status failed: {done.stdout}{done.stderr}"
    status = json.loads(done.stdout)
    with psycopg.connect(config.database_url) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert row is not None
    return SharedState(
        rabbitmq_pid=int(status["pid"]),
        rabbitmq_ports=frozenset(int(item["port"]) for item in status["listeners"]),
        postgres_started_at=row[0],
    )


@pytest.fixture(scope="module")
def shared_before() -> SharedState:
    """Taken before any private service starts (the fixtures below depend on it)."""
    return shared_state()


@pytest.fixture(scope="module")
def broker(shared_before: SharedState) -> Iterator[PrivateRabbitMQ]:
    with private_rabbitmq() as node:
        yield node


@pytest.fixture(scope="module")
def pg(shared_before: SharedState) -> Iterator[PrivatePostgres]:
    with private_postgres() as cluster:
        yield cluster


# -- helpers ---------------------------------------------------------------------------------


async def publish(channel: AbstractChannel, queue: str, body: bytes) -> None:
    """A persistent message to ``queue``, confirmed by the broker (aio-pika's default channel
    has publisher confirms on: ``publish`` returns once the broker acked it)."""
    message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
    await channel.default_exchange.publish(message, routing_key=queue)


async def settles(check: Callable[[], Any], expected: Any, timeout_s: float = 30.0) -> None:
    """Poll the blocking ``check`` in a thread (the event loop, and robust connections on it,
    keep running) until it returns ``expected``; AssertionError with its last value if not."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (value := await asyncio.to_thread(check)) != expected:
        assert loop.time() < deadline, f"{value!r} != {expected!r} after {timeout_s} s"
        await asyncio.sleep(0.3)


@contextlib.asynccontextmanager
async def robust_consumer(url: str, name: str) -> AsyncIterator[asyncio.Queue[bytes]]:
    """Quorum queue ``name`` consumed over a robust connection (reconnects every 0.5 s); the
    bodies it receives, acked once queued."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(message: AbstractIncomingMessage) -> None:
        async with message.process():
            await received.put(message.body)

    connection = await aio_pika.connect_robust(url, reconnect_interval=0.5)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True, arguments=QUORUM)
        await queue.consume(on_message)
        yield received


# -- RabbitMQ ---------------------------------------------------------------------------------


async def test_the_private_node_is_not_the_shared_one(
    broker: PrivateRabbitMQ, shared_before: SharedState
) -> None:
    assert broker.port not in shared_before.rabbitmq_ports
    name = f"{PREFIX}only-here"
    private = await aio_pika.connect(broker.url)
    async with private:
        channel = await private.channel()
        await channel.declare_queue(name, durable=True, arguments=QUORUM)
    shared = await aio_pika.connect(DevServicesConfig.from_env().amqp_url)
    async with shared:
        channel = await shared.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.declare_queue(name, passive=True)


async def test_quorum_queue_message_and_robust_consumer_survive_a_restart(
    broker: PrivateRabbitMQ,
) -> None:
    prefix = f"{PREFIX}restart-"
    live, kept = f"{prefix}live", f"{prefix}kept"
    async with robust_consumer(broker.url, live) as received:
        connection = await aio_pika.connect(broker.url)
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(kept, durable=True, arguments=QUORUM)
            await publish(channel, kept, b"published before the restart")
            await publish(channel, live, b"ping 1")
        assert await asyncio.wait_for(received.get(), 10) == b"ping 1"
        await settles(lambda: broker.consumers(prefix), {kept: 0, live: 1})
        await settles(lambda: broker.depths(prefix), {kept: 1, live: 0})
        pid = broker.pid

        await asyncio.to_thread(broker.restart)

        assert broker.pid not in (None, pid), "a new broker process"
        await settles(lambda: broker.depths(kept), {kept: 1})
        await settles(lambda: broker.consumers(live), {live: 1})  # the robust consumer is back
        connection = await aio_pika.connect(broker.url)
        async with connection:
            channel = await connection.channel()
            await publish(channel, live, b"ping 2")
            assert await asyncio.wait_for(received.get(), 10) == b"ping 2"
            queue = await channel.get_queue(kept)
            message = await queue.get(timeout=10)
            assert message.body == b"published before the restart"
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            await message.ack()
        await settles(lambda: broker.depths(prefix), {kept: 0, live: 0})


async def test_confirmed_messages_survive_a_crash(broker: PrivateRabbitMQ) -> None:
    name = f"{PREFIX}crash"
    bodies = [f"confirmed before SIGKILL {i}".encode() for i in range(20)]
    connection = await aio_pika.connect(broker.url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True, arguments=QUORUM)
        await asyncio.sleep(CRASH_SAFE_AFTER_DECLARE_S)
        for body in bodies:
            await publish(channel, name, body)
        await asyncio.to_thread(broker.kill)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", broker.port)

    await asyncio.to_thread(broker.start)

    connection = await aio_pika.connect(broker.url)
    async with connection:
        queue = await (await connection.channel()).get_queue(name)
        received = []
        while (message := await queue.get(timeout=10, fail=False)) is not None:
            received.append(message.body)
            await message.ack()
    assert received == bodies


async def test_robust_consumer_comes_back_after_its_connections_are_closed(
    broker: PrivateRabbitMQ,
) -> None:
    live = f"{PREFIX}closed-live"
    async with robust_consumer(broker.url, live) as received:
        await settles(lambda: broker.consumers(live), {live: 1})

        await asyncio.to_thread(broker.close_connections)

        await settles(lambda: broker.consumers(live), {live: 1})
        connection = await aio_pika.connect(broker.url)
        async with connection:
            await publish(await connection.channel(), live, b"after close_all_connections")
        assert await asyncio.wait_for(received.get(), 10) == b"after close_all_connections"


async def test_stop_app_refuses_connections_until_start_app(broker: PrivateRabbitMQ) -> None:
    pid = broker.pid
    await asyncio.to_thread(broker.stop_app)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", broker.port)

    await asyncio.to_thread(broker.start_app)

    assert broker.pid == pid, "the Erlang VM kept running"
    connection = await aio_pika.connect(broker.url)
    await connection.close()


# -- PostgreSQL -------------------------------------------------------------------------------


async def test_row_survives_a_restart_held_connection_fails_new_one_works(
    pg: PrivatePostgres,
) -> None:
    url = await asyncio.to_thread(pg.create_database, "faults_restart")
    held = await asyncpg.connect(url)
    await held.execute("CREATE TABLE kept (id int PRIMARY KEY, body text NOT NULL)")
    await held.execute("INSERT INTO kept VALUES (1, 'committed before the restart')")

    await asyncio.to_thread(pg.stop)

    with pytest.raises(OSError):
        await asyncpg.connect(url, timeout=5)
    with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError)):
        await held.fetchval("SELECT 1")
    await held.close()

    await asyncio.to_thread(pg.start)

    fresh = await asyncpg.connect(url)
    try:
        assert await fresh.fetchval("SELECT body FROM kept WHERE id = 1") == (
            "committed before the restart"
        )
    finally:
        await fresh.close()


async def test_committed_rows_survive_a_crash_open_transactions_do_not(
    pg: PrivatePostgres,
) -> None:
    url = await asyncio.to_thread(pg.create_database, "faults_crash")
    held = await asyncpg.connect(url)
    await held.execute("CREATE TABLE rows (id int PRIMARY KEY)")
    await held.execute("INSERT INTO rows VALUES (1)")
    transaction = held.transaction()
    await transaction.start()
    await held.execute("INSERT INTO rows VALUES (2)")

    await asyncio.to_thread(pg.restart, "immediate")

    with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError)):
        await held.execute("INSERT INTO rows VALUES (3)")
    held.terminate()
    fresh = await asyncpg.connect(url)
    try:
        assert [r["id"] for r in await fresh.fetch("SELECT id FROM rows ORDER BY id")] == [1]
    finally:
        await fresh.close()


async def test_kill_connections_ends_sessions_not_the_server(pg: PrivatePostgres) -> None:
    url = await asyncio.to_thread(pg.create_database, "faults_kill")
    sessions = [await asyncpg.connect(url) for _ in range(2)]

    assert await asyncio.to_thread(pg.kill_connections, "faults_kill") == 2

    await settles(lambda: [session.is_closed() for session in sessions], [True, True], 10)
    for session in sessions:
        with pytest.raises(asyncpg.InterfaceError, match="connection is closed"):
            await session.fetchval("SELECT 1")
    fresh = await asyncpg.connect(url)
    assert await fresh.fetchval("SELECT 1") == 1
    await fresh.close()


# -- and the machine's own ---------------------------------------------------------------------


def test_the_shared_instances_were_not_touched(
    shared_before: SharedState, broker: PrivateRabbitMQ, pg: PrivatePostgres
) -> None:
    assert shared_state() == shared_before
