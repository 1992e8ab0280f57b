"""A worker's ``/healthz`` and ``/readyz`` against the real RabbitMQ (prefix ``t_health``).

The consumer's connection is closed by the broker (``rabbitmqctl close_connection``, found by
its client-provided connection name); readiness must drop and come back with aio-pika's
reconnect, and the queue must have its consumer again. aio-pika reconnects within
milliseconds, so the consumer logs in as its own test user whose permissions are withdrawn
while it is down: the reconnect is refused until they are given back. Nothing is skipped: if
RabbitMQ cannot be reached, the fixtures raise and every test here fails.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractChannel

from shared.adapters import broker
from shared.events import BaseEvent, FileReceived, utcnow
from shared.runner import StageConsumer
from shared.settings import AmqpSettings
from shared.stage import Stage
from shared.telemetry.health import serve_health
from shared.topology import Topology
from tests.e2e.pipeline import free_port

pytestmark = pytest.mark.integration

PREFIX = "t_health"
RUN = uuid.uuid4().hex[:8]
CONNECTION_NAME = f"{PREFIX}-scan-{RUN}"
USER, PASSWORD = f"{PREFIX}-{RUN}", uuid.uuid4().hex
# aiormq takes the client-provided connection name from the URL's `name` query parameter.
AMQP = AmqpSettings(
    prefix=PREFIX,
    url=f"amqp://{USER}:{PASSWORD}@127.0.0.1:5672/?name={CONNECTION_NAME}&reconnect_interval=1",
)
TOPOLOGY = Topology(prefix=PREFIX, delivery_limit=AMQP.delivery_limit)
ROOT = Path(__file__).resolve().parents[2]


async def rabbitmqctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def consumers_on(queue: str) -> int:
    for line in (
        await rabbitmqctl("list_queues", "--no-table-headers", "name", "consumers")
    ).splitlines():
        name, _, count = line.partition("\t")
        if name == queue:
            return int(count)
    raise AssertionError(f"no queue {queue}")


async def close_connection_named(name: str) -> None:
    listing = await rabbitmqctl(
        "list_connections", "--no-table-headers", "pid", "client_properties"
    )
    pids = [line.split("\t", 1)[0] for line in listing.splitlines() if f'"{name}"' in line]
    assert len(pids) == 1, f"connections named {name}: {pids}"
    await rabbitmqctl("close_connection", pids[0], "test: broker closes the consumer's connection")


async def readyz(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/readyz")


async def wait_for_status(
    client: httpx.AsyncClient, status: int, timeout_s: float
) -> httpx.Response:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (response := await readyz(client)).status_code != status:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"/readyz not {status} within {timeout_s} s: {response.text}")
        await asyncio.sleep(0.05)
    return response


async def allow(user: str) -> None:
    await rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")


async def deny(user: str) -> None:
    await rabbitmqctl("clear_permissions", "-p", "/", user)


@pytest.fixture
async def consumer_user(services: Any) -> AsyncIterator[str]:
    """A broker user of this test only, allowed everything on ``/``; deleted afterwards."""
    await rabbitmqctl("add_user", USER, PASSWORD)
    try:
        await allow(USER)
        yield USER
    finally:
        await rabbitmqctl("delete_user", USER)


@pytest.fixture
async def channel(services: Any) -> AsyncIterator[AbstractChannel]:
    """A channel on a freshly declared ``t_health`` topology, deleted again afterwards."""
    connection = await broker.connect(AmqpSettings(prefix=PREFIX))
    channel = await connection.channel()
    await TOPOLOGY.delete(channel)
    await TOPOLOGY.declare(channel)
    try:
        yield channel
    finally:
        await TOPOLOGY.delete(channel)
        await connection.close()


async def sluice_health(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", "health", *args,
        cwd=ROOT, env={**os.environ, "SLUICE_LOG_LEVEL": "warning", "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_readiness_follows_the_consumer_through_a_reconnect(
    channel: AbstractChannel, consumer_user: str
) -> None:
    handled: list[uuid.UUID] = []

    async def record(event: BaseEvent) -> list[BaseEvent]:
        handled.append(event.event_id)
        return []

    consumer = StageConsumer(Stage("scan", record), AMQP, TOPOLOGY)
    port = free_port()
    stop = asyncio.Event()
    server = asyncio.create_task(serve_health(port, [consumer], stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            for _ in range(100):  # the server starts in the background
                try:
                    live = await client.get("/healthz")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.02)
            assert (live.status_code, live.json()) == (200, {"status": "ok"})
            not_started = await readyz(client)
            assert not_started.status_code == 503
            assert not_started.json()["stages"] == {"scan": "not_ready"}
            assert not_started.json()["error"] == {
                "code": "not_ready",
                "message": "not ready: scan",
            }

            await consumer.start()
            try:
                ready = await readyz(client)
                assert (ready.status_code, ready.json()) == (
                    200,
                    {
                        "status": "ready",
                        "stages": {"scan": "ready"},
                        "breakers": {
                            "scan": {
                                "state": "closed",
                                "dependency": None,
                                "since": None,
                                "probes_failed": 0,
                                "last_error": None,
                            }
                        },
                    },
                )
                assert await sluice_health("scan", "--port", str(port)) == (
                    0,
                    "scan: ready (ready)\n",
                )
                code, out = await sluice_health("store", "--port", str(port))
                assert (code, out) == (1, "store: NOT ready (not served at this port)\n")

                await deny(consumer_user)
                await close_connection_named(CONNECTION_NAME)
                down = await wait_for_status(client, 503, timeout_s=10)
                assert down.json()["stages"] == {"scan": "not_ready"}
                assert await sluice_health("scan", "--port", str(port)) == (
                    1,
                    "scan: NOT ready (not_ready)\n",
                )
                assert (await readyz(client)).status_code == 503  # still refused

                await allow(consumer_user)
                await wait_for_status(client, 200, timeout_s=30)
                deadline = asyncio.get_running_loop().time() + 10
                while (count := await consumers_on(TOPOLOGY.queue("scan"))) != 1:
                    assert asyncio.get_running_loop().time() < deadline, f"{count} consumers"
                    await asyncio.sleep(0.2)

                # And it consumes again: an event published now is handled.
                event = received()
                await channel.default_exchange.publish(
                    broker.event_message(event), routing_key=TOPOLOGY.queue("scan")
                )
                deadline = asyncio.get_running_loop().time() + 10
                while event.event_id not in handled:
                    assert asyncio.get_running_loop().time() < deadline, "not handled"
                    await asyncio.sleep(0.05)
            finally:
                await consumer.stop()
            stopped = await readyz(client)
            assert stopped.status_code == 503
    finally:
        stop.set()
        await server
    code, out = await sluice_health("scan", "--port", str(port))
    assert code == 1 and out.startswith(f"scan: unreachable (http://127.0.0.1:{port}/readyz")


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
