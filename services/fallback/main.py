"""Wiring of the fallback worker: the consumer of the store stage's S3-outage dead letters
(``<prefix>.fallback``) and, beside it, the migration loop back to S3."""

from __future__ import annotations

import asyncio
import contextlib
import functools

import structlog

from services.fallback import migrator
from services.fallback.handler import Deps, handle
from services.fallback.repository import FallbackRepository
from shared.adapters import broker
from shared.adapters.db import create_pool, ping
from shared.adapters.object_storage import open_object_storage
from shared.adapters.row_cipher import RowCipher
from shared.adapters.sources import SpoolOrS3SourceReader
from shared.adapters.spools import open_spools
from shared.breaker import Dependency, DependencyName
from shared.errors import DatabaseUnavailable, QuarantineUnavailable
from shared.events import BaseEvent
from shared.settings import Settings
from shared.stage import Stage
from shared.telemetry import tracing
from shared.topology import FALLBACK, FALLBACK_DEAD_LETTERS, Topology

log = structlog.get_logger("sluice.fallback")


async def build(settings: Settings) -> Stage:
    """Open PostgreSQL, the spool and S3; return the ``fallback`` stage with its migration loop
    as ``background``. A PostgreSQL outage opens the stage's circuit breaker (probe:
    ``SELECT 1``): the bytes wait in its queue rather than in the store dead-letter queue.

    Raises:
        DatabaseUnavailable: PostgreSQL cannot be reached.
    """
    stack = contextlib.AsyncExitStack()
    pool = await create_pool(settings.database)
    repository = FallbackRepository(pool)
    stack.push_async_callback(repository.close)
    storage = await stack.enter_async_context(
        open_object_storage(settings, stored_bytes_stage=FALLBACK)
    )
    spool = await stack.enter_async_context(open_spools(settings))
    deps = Deps(
        sources=SpoolOrS3SourceReader.for_settings(spool, storage, settings.s3),
        repository=repository,
        max_bytes=settings.fallback.max_bytes,
        cipher=(cipher := RowCipher.from_settings(settings.fallback)),
    )

    async def migrate(stop: asyncio.Event) -> None:
        # The loop must outlive a broker that is away when it starts: connect until it works.
        while not stop.is_set():
            try:
                connection = await broker.connect(settings.amqp)
                break
            except Exception as exc:
                log.warning("migration loop cannot reach the broker yet", error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.fallback.probe_interval_s)
        else:
            return
        try:
            publisher = await broker.Publisher.create(
                connection, settings.amqp, Topology.of(settings.amqp)
            )

            async def publish(event: BaseEvent) -> None:
                await publisher.publish(event, headers=tracing.inject({}))

            await migrator.run_migrations(
                migrator.Deps(
                    repository=repository,
                    storage=storage,
                    publish=publish,
                    multipart_threshold_bytes=settings.s3.multipart_threshold_bytes,
                    cipher=cipher,
                ),
                probe=storage.ping,
                interval_s=settings.fallback.probe_interval_s,
                batch_size=settings.fallback.batch_size,
                stop=stop,
            )
        finally:
            await connection.close()

    return Stage(
        name=FALLBACK,
        handle_with_history=functools.partial(handle, deps=deps),
        close=stack.aclose,
        background=migrate,
        # Whatever fails in the fallback goes to the store dead-letter queue, from which a
        # replay sends it back to the store stage once S3 is back (as a refused file does).
        dead_letter_route=lambda _: FALLBACK_DEAD_LETTERS,
        dependencies=(
            Dependency(
                DependencyName.POSTGRESQL, (DatabaseUnavailable,), functools.partial(ping, pool)
            ),
            # A quarantined file reaches the fallback only if S3 answered the store stage's
            # probe; should S3 then fail its read, wait for S3 rather than dead-letter it.
            Dependency(DependencyName.S3, (QuarantineUnavailable,), storage.ping),
        ),
    )
