"""Wiring of the optional mirror consumer (``SLUICE_MIRROR_ENABLED``): the main object store,
the mirror's S3 (``SLUICE_MIRROR_*``), PostgreSQL, and the mirror's queues."""

from __future__ import annotations

import contextlib
import functools

from services.mirror.handler import Deps, handle
from shared.adapters import broker
from shared.adapters.db import create_pool, ping
from shared.adapters.object_storage import open_object_storage
from shared.adapters.storage import S3ObjectStorage
from shared.breaker import Dependency, DependencyName
from shared.errors import ConfigError, DatabaseUnavailable
from shared.settings import Settings
from shared.stage import Stage
from shared.topology import MIRROR, Topology


async def build(settings: Settings) -> Stage:
    """Declare the mirror's queues (bound to ``file.committed``, ``file.deleted`` and
    ``file.quarantined``), open both stores and PostgreSQL, and return the ``mirror`` stage.
    The mirror's bucket is made if missing when its S3 answers; S3 outages are retried per
    message.

    Raises:
        ConfigError: ``SLUICE_MIRROR_ENABLED`` is not set.
        BrokerUnavailable: RabbitMQ unreachable. DatabaseUnavailable: PostgreSQL unreachable.
    """
    if not settings.mirror.enabled:
        raise ConfigError("the mirror worker needs SLUICE_MIRROR_ENABLED=true and its settings")
    topology = Topology.of(settings.amqp)
    connection = await broker.connect(settings.amqp)
    try:
        channel = await broker.open_channel(connection, settings.amqp)
        await topology.declare(channel)
        await topology.declare_mirror(channel)
    finally:
        await connection.close()
    stack = contextlib.AsyncExitStack()
    main = await stack.enter_async_context(open_object_storage(settings))
    mirror = await stack.enter_async_context(
        S3ObjectStorage(settings.mirror.s3(settings.s3), stored_bytes_stage=MIRROR)
    )
    with contextlib.suppress(Exception):  # S3 down at start: each message retries
        await mirror.ensure_bucket()
    pool = await create_pool(settings.database)
    stack.push_async_callback(pool.close)
    return Stage(
        name=MIRROR,
        handle=functools.partial(handle, deps=Deps(pool=pool, main=main, mirror=mirror)),
        close=stack.aclose,
        dependencies=(
            Dependency(
                DependencyName.POSTGRESQL, (DatabaseUnavailable,), functools.partial(ping, pool)
            ),
        ),
    )
