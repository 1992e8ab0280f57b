"""The gateway of the gateway tests: one per worker, run in process on the local services
(``tests/integration/conftest.py``), with its database, a connection to RabbitMQ, the bucket,
a queue that receives its ``file.received`` events, and two owners with their keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection

from services.gateway.keys import create_key
from shared.adapters import db
from shared.adapters.storage import S3ObjectStorage
from shared.settings import GatewaySettings, Settings
from tests.integration.gateway.support import (
    BUCKET,
    DATABASE,
    PREFIX,
    Gateway,
    MakeSettings,
    _owner,
    running,
)
from tests.localenv import FreshBucket, Local


@pytest.fixture(scope="session")
def make_settings(local: Local, fresh_bucket: FreshBucket) -> MakeSettings:
    """``make_settings(spool_dir, *, amqp_url=None, prefix=PREFIX, port=8080, **gateway)``: the
    gateway's settings on the local services, with its database and bucket (made if missing);
    ``gateway`` sets more of :class:`GatewaySettings` (``outbox_max_events=...``). No metrics
    port unless ``metrics_port`` is given (gateways served at once must not share one)."""
    fresh_bucket(BUCKET)

    def make(
        spool_dir: Path,
        *,
        amqp_url: str | None = None,
        prefix: str = PREFIX,
        port: int = 8080,
        **gateway: Any,
    ) -> Settings:
        url = {"url": amqp_url} if amqp_url else {}
        return local.settings(
            spool_dir,
            amqp=local.amqp(prefix, publish_timeout_s=3.0, **url),
            database=local.database(DATABASE, pool_max_size=4),
            s3=local.s3(BUCKET, presign_ttl_s=120),
            gateway=GatewaySettings(host="127.0.0.1", port=port, **{"metrics_port": 0, **gateway}),
        )

    return make


@pytest.fixture(scope="session")
async def pool(local: Local) -> AsyncIterator[asyncpg.Pool]:
    settings = local.database(DATABASE)
    await db.ensure_database(settings)
    await asyncio.to_thread(db.migrate, settings)
    pool = await db.create_pool(settings)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def amqp(local: Local) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(local.config.amqp_url)
    yield connection
    await connection.close()


@pytest.fixture(scope="session")
async def storage(make_settings: MakeSettings) -> AsyncIterator[S3ObjectStorage]:
    async with S3ObjectStorage(make_settings(Path("/nonexistent")).s3) as opened:
        yield opened


@pytest.fixture(scope="session")
async def gateway(
    pool: asyncpg.Pool,
    amqp: AbstractRobustConnection,
    make_settings: MakeSettings,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Gateway]:
    async with running(make_settings(tmp_path_factory.mktemp("spool"))) as gw:
        channel = await amqp.channel()
        for stage in ("scan", "commit"):  # the stage queues of this prefix have no consumer
            await (await channel.get_queue(f"{PREFIX}.{stage}")).purge()
        yield gw
        for stage in ("scan", "commit"):
            await (await channel.get_queue(f"{PREFIX}.{stage}")).purge()
        await channel.close()


@pytest.fixture(scope="session")
async def received(
    gateway: Gateway, amqp: AbstractRobustConnection
) -> AsyncIterator[AbstractQueue]:
    """A test queue bound to ``file.received`` on the gateway's exchange."""
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(f"{PREFIX}.events", "file.received")
    yield queue
    await channel.close()


@pytest.fixture
async def gw(gateway: Gateway, received: AbstractQueue) -> Gateway:
    """The session's gateway with an empty spool, an empty outbox and an empty test queue."""
    for entry in [*gateway.spool_dir.iterdir(), *gateway.spool_dir.glob(".outbox/*.json")]:
        if entry.is_file():
            entry.unlink()
    await received.purge()
    return gateway


@pytest.fixture(scope="session")
async def alice(pool: asyncpg.Pool) -> tuple[str, dict[str, str]]:
    """An owner and the headers carrying its key."""
    owner = _owner("alice")
    return owner, {"Authorization": f"Bearer {await create_key(pool, owner)}"}


@pytest.fixture(scope="session")
async def bob(pool: asyncpg.Pool) -> tuple[str, dict[str, str]]:
    owner = _owner("bob")
    return owner, {"Authorization": f"Bearer {await create_key(pool, owner)}"}


@pytest.fixture(scope="session")
async def operator(pool: asyncpg.Pool) -> tuple[str, dict[str, str]]:
    """An operator and the headers carrying its ``ops:read`` key."""
    owner = _owner("ops")
    return owner, {"Authorization": f"Bearer {await create_key(pool, owner, scope='ops:read')}"}
